"""Hostile input, one test (at least) per defect found by the reliability sweep.

Each test reproduces a defect seen on an earlier main with the tiny models and checks that the
run now fails clearly (or skips only what is bad) and that nothing already written is lost.
Keep new cases here, so the list can grow.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import StoreError

KEEP_ALL = {"threshold": 0.0, "device": "cpu"}


def damage(shard: Path, array: str = "rle_bytes") -> None:
    """Overwrites bytes in the middle of one array's data in a safetensors file."""
    data = bytearray(shard.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8 : 8 + length])[array]["data_offsets"]
    base = 8 + length
    middle = base + (start + end) // 2
    data[middle : middle + 8] = b"\xff\x00\x7f\x01\xff\x00\x7f\x01"
    shard.write_bytes(bytes(data))


@pytest.fixture
def embedded(make_dataset, image_files, tiny_checkpoint, tmp_path):
    dataset = make_dataset(image_files)
    report = usam.embed(
        dataset, store=tmp_path / "store", checkpoint=tiny_checkpoint, points_per_side=2,
        device="cpu", progress=False,
    )  # fmt: skip
    return dataset, report.store


# -- 1. a damaged shard is reported by name, never decoded -----------------------------------


def test_a_damaged_shard_is_named_and_never_decoded(embedded):
    dataset, store_path = embedded
    shard = sorted((store_path / "shards").glob("*.safetensors"))[0]
    damage(shard)
    store = EmbeddingStore.open(store_path)
    first = next(iter(store.sample_ids() & set(dataset.values("id"))))
    with pytest.raises(StoreError, match=rf"shard {shard}.*damaged.*usam embed --store"):
        store.get(first)
    with pytest.raises(StoreError, match="damaged"):
        store.load_embeddings(sorted(store.sample_ids()))


def test_training_on_a_damaged_store_is_refused(embedded_training_dataset, tmp_path):
    dataset, store_path = embedded_training_dataset
    copy = tmp_path / "store"
    shutil.copytree(store_path, copy)
    damage(sorted((copy / "shards").glob("*.safetensors"))[0], "embeddings")
    with pytest.raises(StoreError, match="damaged"):
        usam.train_head(dataset, store=copy, out=tmp_path / "h", epochs=1, device="cpu")


def test_rle_counts_are_checked_against_the_mask_size():
    from fiftyone_usam.masks import check_rle, encode_masks

    good = encode_masks(np.ones((4, 5, 1), np.uint8))[0]
    check_rle(good, 4, 5)
    for bad, size in ((good, (4, 6)), (b"0\x7f", (4, 5)), (b"0", (4, 5)), (b"o", (1, 1))):
        with pytest.raises(StoreError):
            check_rle(bad, *size)


@pytest.mark.slow
def test_predict_on_a_damaged_shard_fails_within_seconds(
    make_dataset, image_files, tiny_head, tmp_path
):
    target = make_dataset(image_files)
    usam.predict(target, head=tiny_head, store=tmp_path / "s", **KEEP_ALL, progress=False)
    damage(sorted((tmp_path / "s" / "shards").glob("*.safetensors"))[0])
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fiftyone_usam", "predict", "--dataset", target.name,
         "--head", str(tiny_head), "--store", str(tmp_path / "s"), "--field", "again",
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "damaged" in result.stderr and "usam embed --store" in result.stderr
    assert elapsed < 120  # seconds, not the endless loop of a damaged RLE in pycocotools


# -- 2. one image that cannot be decoded costs only itself ---------------------------------


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A 15000x15000 PNG: small on disk, 225 MP when decoded (PIL's DecompressionBombError)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (15000, 15000)).save(path, optimize=False)
    return path


def test_a_decompression_bomb_is_one_failed_sample(
    make_dataset, image_files, bomb, tiny_checkpoint, tmp_path
):
    dataset = make_dataset([image_files[0], bomb, image_files[1]])
    for _ in range(2):  # the re-run does not die the same way either
        report = usam.embed(
            dataset, store=tmp_path / "s", checkpoint=tiny_checkpoint, points_per_side=2,
            device="cpu", progress=False,
        )  # fmt: skip
        (bad,) = report.failed
        assert "too large" in report.failed[bad] or "MP" in report.failed[bad]
    assert len(EmbeddingStore.open(tmp_path / "s")) == 2


def test_the_pixel_limit_is_configurable(tmp_path, image_files):
    from fiftyone_usam.errors import ImageLoadError
    from fiftyone_usam.images import load_rgb

    with pytest.raises(ImageLoadError, match=r"above the limit.*--max-pixels"):
        load_rgb(image_files[0], max_pixels=100)
    assert load_rgb(image_files[0], max_pixels=None).ndim == 3


def test_large_images_get_masks_at_their_size_from_scaled_logits(tiny_sam):
    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
    from fiftyone_usam.embeddings.sam_backend import load_sam
    from fiftyone_usam.testing.scenes import scene

    image = scene(300, 400, 1)
    sam = load_sam(tiny_sam, device="cpu")
    full = MaskEmbeddingExtractor(sam, points_per_side=3).extract([image])[0]
    scaled = MaskEmbeddingExtractor(sam, points_per_side=3, max_mask_pixels=30_000).extract(
        [image]
    )[0]
    assert scaled.decode_masks().shape == full.decode_masks().shape == (9, 3, 300, 400)
    assert (scaled.decode_masks() == full.decode_masks()).mean() > 0.9
    np.testing.assert_array_equal(scaled.embeddings, full.embeddings)


# -- 3. a field of another type is never cleared ---------------------------------------------


def test_overwrite_onto_a_field_of_another_type_changes_nothing(
    make_dataset, image_files, tiny_head
):
    from fiftyone_usam.fiftyone_io.writer import FieldExistsError

    target = make_dataset(image_files[:2])
    target.set_values("usam_semantic", ["mine", "also mine"])
    with pytest.raises(FieldExistsError, match="usam_semantic is a StringField"):
        usam.predict(target, head=tiny_head, overwrite=True, **KEEP_ALL, progress=False)
    assert target.values("usam_semantic") == ["mine", "also mine"]
    assert "usam_semantic" not in target.mask_targets
    assert not target.info.get("usam_predictions")


# -- 4. a changed image file is embedded again ----------------------------------------------


def test_a_sample_whose_image_changed_is_embedded_again(
    make_dataset, image_files, tiny_head, tmp_path
):
    target = make_dataset(image_files[:2])
    usam.predict(target, head=tiny_head, store=tmp_path / "s", **KEEP_ALL, progress=False)
    sample = target.first()
    other = tmp_path / "tall.png"
    Image.fromarray(np.full((80, 8, 3), 200, np.uint8)).save(other)
    sample.filepath = str(other)
    sample.save()
    report = usam.predict(
        target, head=tiny_head, store=tmp_path / "s", field="again", **KEEP_ALL, progress=False
    )
    assert report.used_sam and report.failed == {}
    assert target.first()["again_semantic"].mask.shape == (80, 8)
    assert EmbeddingStore.open(tmp_path / "s").get(sample.id).image_size == (80, 8)


# -- 6. apply_model: the same weights always match; one bad image costs only itself -------


def test_apply_model_with_a_sam_object_and_a_head_from_a_checkpoint_file(
    make_dataset, image_files, tiny_head, tiny_sam
):
    target = make_dataset(image_files[:2])
    model = usam.load_model(tiny_head, sam=tiny_sam, threshold=0.0, device="cpu")
    target.apply_model(model, "usam", skip_failures=False)
    assert target.count("usam_semantic") == 2


def test_apply_model_batch_with_one_sample_that_fails(
    make_dataset, image_files, tiny_head, tiny_checkpoint, tmp_path
):
    """A sample that fails inside the model (here: its shard is damaged) costs only itself, not
    the rest of its batch. (An image FiftyOne itself cannot read still costs its batch:
    FiftyOne reads a batch's images before calling the model.)"""
    target = make_dataset(image_files[:2])
    usam.embed(
        target, store=tmp_path / "s", checkpoint=tiny_checkpoint, points_per_side=2,
        device="cpu", shard_size=1, progress=False,
    )  # fmt: skip
    first = target.first().id
    store = EmbeddingStore.open(tmp_path / "s")
    damage(store._locate(first)[0])
    model = usam.load_model(tiny_head, store=tmp_path / "s", threshold=0.0, device="cpu")
    target.apply_model(model, "usam", batch_size=2, skip_failures=True)
    written = dict(zip(target.values("id"), target.values("usam_semantic"), strict=True))
    assert written[first] is None
    assert all(label is not None for sid, label in written.items() if sid != first)


def test_a_head_from_arrays_with_an_explicit_sam_works_once_warned(
    make_dataset, image_files, planted_head, tiny_sam, caplog
):
    target = make_dataset(image_files[:2])
    with caplog.at_level("WARNING"):
        model = usam.load_model(planted_head, sam=tiny_sam, threshold=0.0, device="cpu")
    assert "cannot confirm" in caplog.text
    target.apply_model(model, "usam", skip_failures=False)
    assert target.count("usam_semantic") == 2


def test_a_real_mismatch_is_refused_once_before_any_sample(tiny_head):
    from fiftyone_usam.testing.sam import build_tiny_sam

    with pytest.raises(StoreError, match="checkpoint_sha256"):
        usam.load_model(tiny_head, sam=build_tiny_sam(seed=7), device="cpu")


# -- 7. clear errors instead of tracebacks --------------------------------------------------


def test_head_weights_replaced_by_garbage_with_a_matching_hash(tmp_path, planted_head):
    import hashlib

    from fiftyone_usam.errors import CheckpointError
    from fiftyone_usam.head.checkpoint import load_head, save_head

    folder = save_head(planted_head, tmp_path / "h")
    (folder / "head.safetensors").write_bytes(b"garbage" * 100)
    meta = json.loads((folder / "head.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(b"garbage" * 100).hexdigest()
    (folder / "head.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_head(folder)


def test_a_text_file_as_sam_checkpoint(tmp_path):
    from fiftyone_usam.errors import CheckpointError

    text = tmp_path / "notes.pth"
    text.write_text("these are my notes\n")
    with pytest.raises(CheckpointError, match="not a readable file of SAM weights"):
        usam.load_sam("vit_b", text, device="cpu")


def test_an_empty_dataset_says_so(make_dataset):
    from fiftyone_usam.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="has no samples"):
        usam.embed(make_dataset([]), progress=False)


def test_evaluating_an_empty_view_is_an_error_and_leaves_no_running_evaluation(
    make_dataset, image_files
):
    from fiftyone_usam.errors import DatasetNotFoundError

    dataset = make_dataset(image_files[:1])
    with pytest.raises(DatasetNotFoundError, match="has no samples"):
        usam.evaluate(dataset.limit(0), pred_field="usam", gt_field="ground_truth")
    states = [e.get("state") for e in dataset.info.get("usam_evaluations", [])]
    assert "running" not in states


def test_a_failed_evaluation_is_marked_failed(make_dataset, image_files, monkeypatch):
    import fiftyone as fo

    from fiftyone_usam.stages import evaluate as stage

    dataset = make_dataset(image_files[:1])
    mask = np.zeros((48, 64), np.uint8)
    dataset.set_values("gt", [fo.Segmentation(mask=mask)])
    dataset.set_values("usam_semantic", [fo.Segmentation(mask=mask)])
    targets = {0: "background", 1: "disc"}
    dataset.mask_targets = {"gt": targets, "usam_semantic": targets}
    dataset.save()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(stage, "score_view", crash)
    with pytest.raises(RuntimeError):
        usam.evaluate(dataset, pred_field="usam_semantic", gt_field="gt", eval_key="e")
    (entry,) = dataset.info["usam_evaluations"]
    assert entry["state"] == "failed" and "disk full" in entry["error"]


def test_class_names_must_be_strings():
    from fiftyone_usam.errors import ConfigError

    with pytest.raises(ConfigError, match="class names must be strings"):
        usam.load_ontology(["cat", 5])


def test_a_damaged_store_is_never_recorded_as_the_newest(
    embedded, tiny_checkpoint, make_dataset, image_files, tmp_path
):
    _, good = embedded
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    shard = sorted((bad / "shards").glob("*.safetensors"))[0]
    shard.write_bytes(b"\x00" * 64)  # header destroyed
    other = make_dataset(image_files[:2])
    with pytest.raises(StoreError, match="cannot read shard"):
        usam.embed(other, store=bad, checkpoint=tiny_checkpoint, points_per_side=2, device="cpu")
    assert not other.info.get("usam_embedding_stores")


# -- 8. friction ----------------------------------------------------------------------------


def test_predict_finds_a_custom_sam_recorded_with_the_head(make_dataset, image_files, tiny_head):
    target = make_dataset(image_files[:2])
    report = usam.predict(target, head=tiny_head, **KEEP_ALL, progress=False)  # no --checkpoint
    assert report.used_sam and report.labelled == 2


def test_a_custom_sam_that_is_gone_says_where_it_looked(tiny_head, tmp_path):
    from fiftyone_usam.head.checkpoint import load_head
    from fiftyone_usam.inference.sam_match import recorded_sam

    head = load_head(tiny_head)
    head.provenance["sam"] = {"checkpoint": str(tmp_path / "gone.pth"), "variant": None}
    with pytest.raises(StoreError, match=r"custom SAM variant 'tiny'.*gone.pth.*--checkpoint"):
        recorded_sam(head)


def test_train_skips_a_head_with_the_same_inputs(embedded_training_dataset, tmp_path):
    dataset, store = embedded_training_dataset
    quick = {"epochs": 2, "seed": 0, "device": "cpu", "progress": False}
    first = usam.train_head(dataset, store=store, out=tmp_path / "h", **quick)
    again = usam.train_head(dataset, store=store, out=tmp_path / "h", **quick)
    assert first.checkpoints and again.already_trained and not again.checkpoints
    assert "--overwrite" in again.summary()
    forced = usam.train_head(dataset, store=store, out=tmp_path / "h", overwrite=True, **quick)
    assert set(forced.checkpoints) == {"teacher", "student"}


def test_shards_hold_exactly_shard_size_images(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(image_files)
    usam.embed(
        dataset, store=tmp_path / "s", checkpoint=tiny_checkpoint, points_per_side=2,
        device="cpu", batch_size=4, shard_size=2, progress=False,
    )  # fmt: skip
    from fiftyone_usam.embeddings.shards import read_header

    sizes = [len(read_header(s).sample_ids) for s in sorted((tmp_path / "s" / "shards").iterdir())]
    assert sizes == [2, 2, 2]


def test_predict_takes_the_shard_size(make_dataset, image_files, tiny_head, tmp_path):
    target = make_dataset(image_files[:3])
    usam.predict(
        target, head=tiny_head, store=tmp_path / "s", shard_size=1, **KEEP_ALL, progress=False
    )
    assert len(list((tmp_path / "s" / "shards").glob("*.safetensors"))) == 3


# -- 5. the mask decoder takes the grid in chunks, so its memory does not grow with it ------


def test_the_decoder_sees_at_most_points_per_batch_prompts(tiny_sam):
    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor
    from fiftyone_usam.embeddings.sam_backend import load_sam
    from fiftyone_usam.testing.scenes import scene

    sam = load_sam(tiny_sam, device="cpu")
    seen = []
    handle = sam.model.mask_decoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["sparse_prompt_embeddings"].shape[0]),
        with_kwargs=True,
    )
    try:
        (found,) = MaskEmbeddingExtractor(sam, points_per_side=8, points_per_batch=10).extract(
            [scene(40, 50, 0)]
        )
    finally:
        handle.remove()
    assert seen == [10] * 6 + [4] and found.embeddings.shape == (64, 1024)
