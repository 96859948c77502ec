"""Learning from a reviewer's corrections on planted scenes: mask accuracy round by round.

A head is trained (teacher then student, `fiftyone_usam.head.train.fit_head`) on the source
bags of `fiftyone_usam.testing.shift`; the "dataset" is the target scenes after a shift of
strength ``s``, so the head makes real mistakes there: background it calls a class, objects it
gives the wrong class. The planted answer is known, which makes a perfect simulated reviewer.
Each round the reviewer looks at the instances (masks the head labels with a class), takes
the K most uncertain WRONG ones and

- tags a background mask labelled as a class ``wrong`` (target -1),
- relabels an object mask with the wrong class to its class (``relabel``),

and confirms (``ok``) the ``--confirm * K`` most uncertain right object instances; parts are
ambiguous and never reviewed. The corrections accumulate over the rounds and the current head
is refined with all of them (`fiftyone_usam.head.refine.refine_head`), with a replay of up to
20k random masks of the dataset. Every row is measured through `Head.predict` on all of the
dataset's masks (object acc: object masks labelled with their class; background acc:
background masks labelled 0) and on the masks nobody reviewed ("untouched"), before the first
round and after each.

Last, the time of `refine_head` alone for 200 corrections and a 20k-mask float16 replay with a
full-size head (1024-d, hidden 256, 4 classes). ``--round`` times instead one whole round as the
panel's button runs it (`usam.refine`: corrections read from label tags, embeddings from the
store, `refine_head`, the relabel of every image from the cache, the reviewed instances put
back) on 1,000 cached 640x480 images; it needs a database (``FIFTYONE_DATABASE_URI``).

    python benchmarks/bench_refine.py               # 3 seeds, K = 10, 50, 200, 3 rounds (~30 s)
    python benchmarks/bench_refine.py --quick       # 1 seed, small sets (seconds)
    python benchmarks/bench_refine.py --set lambda_anchor=0.3 --no-replay
    python benchmarks/bench_refine.py --round --images 1000   # end to end (database)
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from fiftyone_usam.head.classifier import Head, labels_from_proba
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.model import HeadConfig, MaskClassifier
from fiftyone_usam.head.refine import Corrections, RefineConfig, refine_head
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.testing.planted import BACKGROUND, OBJECT
from fiftyone_usam.testing.shift import make_shifted_scenes

REPLAY = 20_000


@dataclass
class Dataset:
    """The target scenes as flat masks, with the planted answers."""

    x: np.ndarray  # (M, D) float32
    expected: np.ndarray  # (M,) label ids: class + 1 objects, 0 background, -1 parts
    kinds: np.ndarray  # (M,) planted kinds


@dataclass
class Row:
    k: int
    round: int
    corrections: int
    object_acc: float
    background_acc: float
    untouched_object_acc: float
    untouched_background_acc: float
    seconds: float


def accuracies(head: Head, data: Dataset, reviewed: np.ndarray) -> tuple[float, ...]:
    """Object and background acc on every mask, then on the masks not reviewed."""
    predicted = head.predict(data.x)
    out = []
    for keep in (np.ones(len(data.x), bool), ~reviewed):
        objects, background = keep & (data.kinds == OBJECT), keep & (data.kinds == BACKGROUND)
        out += [
            float((predicted[objects] == data.expected[objects]).mean()),
            float((predicted[background] == 0).mean()),
        ]
    return tuple(out)


def review(head: Head, data: Dataset, reviewed: np.ndarray, k: int, confirm: float) -> dict:
    """The simulated reviewer's new corrections: flat mask index -> (target, kind)."""
    probs = head.predict_proba(data.x)
    labels = labels_from_proba(probs, head.threshold)
    confidence = probs.max(-1)
    open_ = (labels > 0) & (data.expected >= 0) & ~reviewed  # unreviewed, unambiguous instances
    wrong = np.flatnonzero(open_ & (labels != data.expected))
    right = np.flatnonzero(open_ & (labels == data.expected))
    out = {}
    for i in wrong[np.argsort(confidence[wrong], kind="stable")][:k]:
        out[int(i)] = (-1, "wrong") if data.expected[i] == 0 else (data.expected[i] - 1, "relabel")
    for i in right[np.argsort(confidence[right], kind="stable")][: round(confirm * k)]:
        out[int(i)] = (data.expected[i] - 1, "ok")
    return out


def run_k(head: Head, data: Dataset, k: int, args: argparse.Namespace, seed: int) -> list[Row]:
    reviewed = np.zeros(len(data.x), bool)
    rng = np.random.default_rng(seed)
    replay = None if args.no_replay else data.x[rng.permutation(len(data.x))[:REPLAY]]
    rows = [Row(k, 0, 0, *accuracies(head, data, reviewed), 0.0)]
    given: dict[int, tuple[int, str]] = {}
    for r in range(1, args.rounds + 1):
        given.update(review(head, data, reviewed, k, args.confirm))
        reviewed[list(given)] = True
        index = np.array(list(given))
        corrections = Corrections(
            data.x[index],
            np.array([given[i][0] for i in index], np.int64),
            tuple(given[i][1] for i in index),
        )
        started = time.perf_counter()
        head = refine_head(head, corrections, replay, args.config)
        seconds = time.perf_counter() - started
        rows.append(Row(k, r, len(given), *accuracies(head, data, reviewed), seconds))
    return rows


def run_seed(seed: int, args: argparse.Namespace) -> list[Row]:
    scenes = make_shifted_scenes(
        args.strength,
        source_images_per_class=args.source_images,
        target_images_per_class=args.target_images,
        masks_per_image=args.masks,
        dim=args.dim,
        seed=seed,
    )
    started = time.perf_counter()
    source = scenes.source
    head = fit_head(
        source.embeddings,
        source.labels,
        source.classes,
        TrainConfig(epochs=60, patience=20, batch_size=16, seed=seed, device="cpu"),
        HeadConfig(hidden_dim=args.hidden_dim, input_dim=args.dim),
    )
    print(f"seed {seed}: source head trained in {time.perf_counter() - started:.1f} s", flush=True)
    target = scenes.target
    data = Dataset(
        target.embeddings.reshape(-1, args.dim),
        target.expected_labels().reshape(-1),
        target.kinds.reshape(-1),
    )
    return [row for k in args.ks for row in run_k(head, data, k, args, seed)]


def print_table(runs: list[list[Row]]) -> None:
    print(
        f"\n{'K':>4s} {'round':>5s} {'corr':>5s}  {'object / background acc':>23s}  "
        f"{'untouched obj / bg':>19s}  {'s/refine':>8s}   per seed (obj/bg)"
    )
    for i, row in enumerate(runs[0]):
        same = [run[i] for run in runs]
        mean = {f.name: np.mean([getattr(r, f.name) for r in same]) for f in fields(Row)}
        seeds = "  ".join(f"{r.object_acc:.3f}/{r.background_acc:.3f}" for r in same)
        print(
            f"{row.k:4d} {row.round:5d} {mean['corrections']:5.0f}  "
            f"{mean['object_acc']:11.3f} / {mean['background_acc']:.3f}  "
            f"{mean['untouched_object_acc']:9.3f} / {mean['untouched_background_acc']:.3f}  "
            f"{mean['seconds']:8.2f}   {seeds}"
        )


def time_refine(config: RefineConfig, repeats: int = 3) -> list[float]:
    """Seconds of `refine_head` for 200 corrections and a 20k-mask float16 replay, full size."""
    torch.manual_seed(0)
    head = Head(MaskClassifier(4, HeadConfig()), [f"class_{c}" for c in range(4)])
    rng = np.random.default_rng(0)
    targets = rng.integers(-1, 4, 200)
    kinds = tuple("wrong" if t < 0 else ("ok", "relabel")[i % 2] for i, t in enumerate(targets))
    corrections = Corrections(rng.standard_normal((200, 1024)).astype(np.float32), targets, kinds)
    replay = rng.standard_normal((REPLAY, 1024)).astype(np.float16)
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        refine_head(head, corrections, replay, config)
        out.append(time.perf_counter() - started)
    return out


def overrides(pairs: list[str]) -> dict[str, object]:
    kinds = {f.name: type(getattr(RefineConfig(), f.name)) for f in fields(RefineConfig)}
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown setting {key!r}; valid: {', '.join(sorted(kinds))}")
        out[key] = kinds[key](value)
    return out


def round_time(args: argparse.Namespace) -> None:
    """One refine + relabel round, end to end, on ``--images`` cached 640x480 images: from the
    reviewer's corrections on the dataset to the refined labels written (SAM never loaded)."""
    import tempfile
    from pathlib import Path

    import fiftyone as fo
    from bench_predict import big_proposals
    from PIL import Image

    import fiftyone_usam as usam
    from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
    from fiftyone_usam.fiftyone_io.corrections import OK_TAG, WRONG_TAG
    from fiftyone_usam.fiftyone_io.datasets import record_store
    from fiftyone_usam.head.checkpoint import save_head
    from fiftyone_usam.head.config import TrainConfig
    from fiftyone_usam.head.model import HeadConfig
    from fiftyone_usam.head.train import fit_head
    from fiftyone_usam.testing.planted import make_planted_bags

    train, held = make_planted_bags(4, 24, seed=0).split(6)
    head = fit_head(
        train.embeddings, train.labels, train.classes,
        TrainConfig(epochs=40, batch_size=16, device="cpu"), HeadConfig(hidden_dim=64),
    )  # fmt: skip
    head.store_spec = StoreSpec("planted", "0" * 64, 10, 1024)
    folder = Path(tempfile.mkdtemp(prefix="usam-bench-refine-"))
    blank = folder / "blank.png"
    Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(blank)
    paths = []
    for i in range(args.images):  # the pixels are never read: labels come from the store
        paths.append(folder / f"{i}.png")
        paths[-1].write_bytes(blank.read_bytes())
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths])
    store = EmbeddingStore.create(folder / "store", head.store_spec)
    ids, rng = dataset.values("id"), np.random.default_rng(0)
    bags = len(held.labels)
    for start in range(0, len(ids), 16):
        chunk = enumerate(ids[start : start + 16], start)
        store.write(
            {
                i: big_proposals(held.embeddings[k % bags], held.kinds[k % bags], rng)
                for k, i in chunk
            }
        )
    record_store(dataset, store)
    head_dir = folder / "head"
    save_head(head, head_dir)
    usam.predict(dataset, head=head_dir, field="usam", progress=False)  # the head's threshold
    detections = dataset.values("usam_instances.detections.id", unwind=True)
    picked = rng.choice(len(detections), size=min(args.corrections, len(detections)), replace=False)
    wrong = [detections[i] for i in picked[::2]]
    confirmed = [detections[i] for i in picked[1::2]]
    dataset.select_labels(ids=wrong).tag_labels(WRONG_TAG)
    dataset.select_labels(ids=confirmed).tag_labels(OK_TAG)
    print(
        f"one refine + relabel round: {args.images} cached 640x480 images (300 masks each, "
        f"{len(detections) / args.images:.1f} instances per image at the head's threshold), "
        f"{len(wrong)} tagged wrong and {len(confirmed)} confirmed; load average before "
        f"{os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    report = usam.refine(dataset, field="usam", out=folder / "refined", progress=False)
    seconds = time.perf_counter() - started
    assert report.relabelled is not None and not report.relabelled.used_sam
    print(
        f"  {seconds:.1f} s from the corrections to the labels written (refine_head "
        f"{report.refine_seconds:.1f} s, relabel {report.relabelled.seconds:.1f} s, "
        f"{report.restored} samples restored as reviewed); target under 10 s; load average "
        f"after {os.getloadavg()[0]:.2f}"
    )
    dataset.delete()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ks", default="10,50,200", help="corrections per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strength", type=float, default=0.9, help="the planted shift's s")
    parser.add_argument("--confirm", type=float, default=0.25, help="ok tags, as a share of K")
    parser.add_argument("--source-images", type=int, default=20, help="per class")
    parser.add_argument("--target-images", type=int, default=25, help="per class")
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-replay", action="store_true", help="refine without a replay")
    parser.add_argument("--no-timing", action="store_true", help="skip the full-size timing")
    parser.add_argument("--quick", action="store_true", help="1 seed, small sets: seconds")
    parser.add_argument("--set", action="append", default=[], help="a RefineConfig field=value")
    parser.add_argument(
        "--round",
        action="store_true",
        help="only: one refine + relabel round on --images cached images (database)",
    )
    parser.add_argument("--images", type=int, default=1000, help="with --round")
    parser.add_argument("--corrections", type=int, default=200, help="with --round")
    args = parser.parse_args()
    if args.round:
        torch.set_num_threads(args.threads)
        round_time(args)
        return
    if args.quick:
        args.seeds, args.source_images, args.target_images, args.masks = 1, 10, 10, 50
        args.ks, args.rounds = "10,50", 2
    torch.set_num_threads(args.threads)
    args.ks = [int(k) for k in args.ks.split(",")]
    args.config = replace(RefineConfig(), **overrides(args.set))
    print(
        f"planted reviewer: shift s={args.strength:g}, 4 classes, source {args.source_images} "
        f"and target {args.target_images} images per class, d={args.masks}, {args.dim}-d, head "
        f"hidden {args.hidden_dim}; seeds 0..{args.seeds - 1}; K={args.ks}, {args.rounds} rounds, "
        f"confirm {args.confirm:g}K; replay {'none' if args.no_replay else REPLAY}; "
        f"{args.config}; CPU, {torch.get_num_threads()} threads"
    )
    started = time.perf_counter()
    print_table([run_seed(seed, args) for seed in range(args.seeds)])
    if not args.no_timing:
        times = time_refine(args.config, 1 if args.quick else 3)
        print(
            "\nrefine_head, 200 corrections + 20k-mask replay, 1024-d head hidden 256: "
            + ", ".join(f"{t:.2f}" for t in times)
            + " s"
        )
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
