"""Label-free adaptation on a planted domain shift: target mask accuracy per ingredient.

A head is trained (teacher then student, `fiftyone_usam.head.train.fit_head`) on the source
bags of `fiftyone_usam.testing.shift`, then adapted (`fiftyone_usam.head.adapt.adapt_head`) to
target scenes of the same classes after a shift of strength ``s`` (prototypes turned, a global
offset, background leaning to classes), with a second view of every scene (fresh noise). The
target's object and background masks are known (parts are ambiguous and left out), so every row
is measured through `Head.predict` (the head's threshold):

- object acc: object masks labelled with their image's class;
- background acc: background masks labelled background (0).

Rows: no adaptation, each ingredient alone (target statistics, pseudo-labels, cross-view
consistency, anchor), and all of them (`AdaptConfig()`); columns: shift strengths; cells: mean
over seeds (the per-seed figures follow). The source head of a seed is shared by its strengths.

    python benchmarks/bench_adapt.py                # 3 seeds, s = 0, 0.9, 1 (~2-3 min, 2 cores)
    python benchmarks/bench_adapt.py --quick        # 1 seed, small sets (seconds)
    python benchmarks/bench_adapt.py --set lr=1e-3 --set epochs=5 --strengths 0,0.5
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from fiftyone_usam.head.adapt import AdaptConfig, adapt_head
from fiftyone_usam.head.classifier import Head
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.model import HeadConfig
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.testing.planted import BACKGROUND, OBJECT, PlantedBags
from fiftyone_usam.testing.shift import make_shifted_scenes

ALL = AdaptConfig()
NOTHING = replace(
    ALL, target_statistics=False, pseudo_labels=False, consistency=False, anchor=False
)
ROWS = {
    "none": None,
    "target statistics": replace(NOTHING, target_statistics=True),
    "pseudo-labels": replace(NOTHING, pseudo_labels=True),
    "consistency": replace(NOTHING, consistency=True),
    "anchor": replace(NOTHING, anchor=True),
    "all": ALL,
}
LEAVE_ONE_OUT = {
    "all but target statistics": replace(ALL, target_statistics=False),
    "all but pseudo-labels": replace(ALL, pseudo_labels=False),
    "all but consistency": replace(ALL, consistency=False),
    "all but anchor": replace(ALL, anchor=False),
}


@dataclass
class Scores:
    object_acc: float
    background_acc: float
    seconds: float


def score(head: Head, bags: PlantedBags, seconds: float) -> Scores:
    predicted = head.predict(bags.embeddings)
    expected = bags.expected_labels()
    objects, background = bags.kinds == OBJECT, bags.kinds == BACKGROUND
    return Scores(
        object_acc=float((predicted[objects] == expected[objects]).mean()),
        background_acc=float((predicted[background] == 0).mean()),
        seconds=seconds,
    )


def scenes(strength: float, seed: int, args: argparse.Namespace):
    return make_shifted_scenes(
        strength,
        source_images_per_class=args.source_images,
        target_images_per_class=args.target_images,
        masks_per_image=args.masks,
        dim=args.dim,
        seed=seed,
        **args.shift,
    )


def source_head(seed: int, args: argparse.Namespace) -> tuple[Head, float]:
    source = scenes(0.0, seed, args).source
    started = time.perf_counter()
    head = fit_head(
        source.embeddings,
        source.labels,
        source.classes,
        TrainConfig(epochs=60, patience=20, batch_size=16, seed=seed, device="cpu"),
        HeadConfig(hidden_dim=args.hidden_dim, input_dim=args.dim),
    )
    return head, time.perf_counter() - started


def run_seed(seed: int, args: argparse.Namespace) -> dict[tuple[str, float], Scores]:
    head, seconds = source_head(seed, args)
    print(f"seed {seed}: source head trained in {seconds:.1f} s", flush=True)
    out = {}
    for strength in args.strengths:
        shifted = scenes(strength, seed, args)
        for name, config in args.rows.items():
            started = time.perf_counter()
            adapted = (
                head
                if config is None
                else adapt_head(
                    head, shifted.target.embeddings, shifted.view, replace(config, **args.overrides)
                )
            )
            out[name, strength] = score(adapted, shifted.target, time.perf_counter() - started)
    return out


def print_table(runs: list[dict[tuple[str, float], Scores]], args: argparse.Namespace) -> None:
    columns = [f"s={s:g}" for s in args.strengths]
    print(
        f"\n{'object / background acc':24s} " + " ".join(f"{c:>15s}" for c in columns) + "  s/run"
    )
    for name in args.rows:
        cells, seconds = [], []
        for s in args.strengths:
            obj = np.mean([run[name, s].object_acc for run in runs])
            bg = np.mean([run[name, s].background_acc for run in runs])
            cells.append(f"{obj:.3f} / {bg:.3f}")
            seconds += [run[name, s].seconds for run in runs]
        print(f"{name:24s} " + " ".join(f"{c:>15s}" for c in cells) + f"  {np.mean(seconds):5.1f}")
    if "all" not in args.rows or "none" not in args.rows:
        return
    print("\nall vs none, per seed (object acc points, background acc points):")
    for s in args.strengths:
        gains = [
            f"{100 * (r['all', s].object_acc - r['none', s].object_acc):+.1f}/"
            f"{100 * (r['all', s].background_acc - r['none', s].background_acc):+.1f}"
            for r in runs
        ]
        print(f"  s={s:g}: " + "  ".join(gains))


def key_values(pairs: list[str], kinds: dict[str, type]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown setting {key!r}; valid: {', '.join(sorted(kinds))}")
        kind = kinds[key]
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--strengths", default="0,0.9,1", help="0, medium, strong")
    parser.add_argument("--source-images", type=int, default=20, help="per class")
    parser.add_argument("--target-images", type=int, default=25, help="per class")
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, small sets: seconds")
    parser.add_argument("--leave-one-out", action="store_true", help="also all but each one")
    parser.add_argument(
        "--rows", default=None, dest="rows_wanted", help="comma-separated rows (default all)"
    )
    parser.add_argument("--set", action="append", default=[], help="an AdaptConfig field=value")
    parser.add_argument("--shift", action="append", default=[], help="make_shifted_scenes k=v")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.source_images, args.target_images, args.masks = 1, 10, 10, 50
    torch.set_num_threads(args.threads)
    args.rows = {**ROWS, **(LEAVE_ONE_OUT if args.leave_one_out else {})}
    if args.rows_wanted:
        args.rows = {name: args.rows[name] for name in args.rows_wanted.split(",")}
    args.strengths = [float(s) for s in args.strengths.split(",")]
    kinds = {f.name: type(getattr(ALL, f.name)) for f in fields(AdaptConfig)}
    args.overrides = key_values(args.set, kinds)
    shift_kinds = {"drift_angle": float, "offset": float, "lean": float, "noise": float}
    args.shift = key_values(args.shift, shift_kinds)
    print(
        f"planted shift: 4 classes, source {args.source_images} and target {args.target_images} "
        f"images per class, d={args.masks}, {args.dim}-d, head hidden {args.hidden_dim}; seeds "
        f"0..{args.seeds - 1}; shift {args.shift or 'defaults'}; AdaptConfig "
        f"{replace(ALL, **args.overrides)}; CPU, {torch.get_num_threads()} threads"
    )
    started = time.perf_counter()
    runs = [run_seed(seed, args) for seed in range(args.seeds)]
    print_table(runs, args)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
