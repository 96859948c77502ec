"""A store of a label field's prompts: ragged rows, prompt ids, fingerprints, its spec."""

import json

import numpy as np
import pytest

from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import StoreError
from fiftyone_usam.head.layout import compatibility_fields
from fiftyone_usam.masks import encode_masks

GRID = StoreSpec("tiny", "ab" * 32, 3, 256)
BOXES = GRID.with_prompts("boxes", "detections")


def boxed(seed: int, prompts: int, h: int = 6, w: int = 5) -> MaskProposals:
    rng = np.random.default_rng(seed)
    masks = rng.random((h, w, prompts)) > 0.5
    return MaskProposals(
        embeddings=rng.standard_normal((prompts, 1024)).astype(np.float16),
        iou_predictions=rng.random((prompts, 1), dtype=np.float32),
        stability_scores=rng.random((prompts, 1), dtype=np.float32),
        points=rng.random((prompts, 2), dtype=np.float32) * 5,
        image_size=(h, w),
        mask_rles=tuple(encode_masks(np.asfortranarray(masks.astype(np.uint8)))),
        prompt_ids=tuple(f"box{seed}-{k}" for k in range(prompts)),
    )


def test_the_spec_records_the_prompts():
    assert (BOXES.prompt_kind, BOXES.prompt_field, BOXES.masks_per_point) == (
        "boxes",
        "detections",
        1,
    )
    assert BOXES.num_points == 0 and not BOXES.on_grid and GRID.on_grid
    assert "the boxes of field 'detections'" in BOXES.describe()
    # a head of the grid labels prompts of the same SAM: the grid is not compared then
    assert "points_per_side" not in compatibility_fields(GRID, BOXES)
    assert "points_per_side" in compatibility_fields(GRID, GRID)
    assert GRID.with_prompts("points", "clicks").masks_per_point == 3
    with pytest.raises(ValueError, match="boxes or points"):
        GRID.with_prompts("grid", "x")


def test_an_old_spec_file_without_prompts_reads_as_a_grid(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", GRID)
    spec = json.loads((store.path / "spec.json").read_text())
    del spec["prompt_kind"], spec["prompt_field"]
    (store.path / "spec.json").write_text(json.dumps(spec))
    assert EmbeddingStore.open(store.path).spec == GRID


def test_ragged_rows_round_trip_with_their_prompt_ids(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", BOXES)
    items = {f"s{i}": boxed(i, prompts=i + 1, h=6 + i) for i in range(4)}
    prints = {i: f"fp-{i}" for i in items}
    store.write(dict(list(items.items())[:3]), prompts=prints)
    store.write({"s3": items["s3"]}, prompts=prints)
    reopened = EmbeddingStore.open(store.path, BOXES)
    # rows read out of order, across shards, and one by one
    for sample_id, got in reopened.iter_proposals(["s2", "s0", "s3", "s1"]):
        want = items[sample_id]
        np.testing.assert_array_equal(got.embeddings, want.embeddings)
        np.testing.assert_array_equal(got.iou_predictions, want.iou_predictions)
        assert got.mask_rles == want.mask_rles and got.prompt_ids == want.prompt_ids
        assert got.image_size == want.image_size and got.prompt_fingerprint == prints[sample_id]
    assert reopened.get("s1").decode_masks().shape == (2, 1, 7, 5)


def test_changed_prompts_are_found_by_fingerprint(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", BOXES)
    store.write({"a": boxed(0, 2), "b": boxed(1, 1)}, prompts={"a": "x", "b": "y"})
    reopened = EmbeddingStore.open(store.path)
    assert reopened.changed_prompts({"a": "x", "b": "moved", "c": "new"}) == ["b"]
    store.write({"b": boxed(2, 3)}, prompts={"b": "moved"}, replace=True)
    reopened.refresh()
    assert reopened.changed_prompts({"a": "x", "b": "moved"}) == []
    assert reopened.get("b").num_points == 3  # the newest shard wins


def test_a_prompted_store_refuses_what_does_not_fit(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", BOXES)
    with pytest.raises(StoreError, match="pass the fingerprint"):
        store.write({"a": boxed(0, 2)})
    grid_like = boxed(0, 2)
    unnamed = MaskProposals(
        grid_like.embeddings,
        grid_like.iou_predictions,
        grid_like.stability_scores,
        grid_like.points,
        grid_like.image_size,
        grid_like.mask_rles,
    )
    with pytest.raises(StoreError, match="0 prompt id"):
        store.write({"a": unnamed}, prompts={"a": "x"})
    store.write({"a": boxed(0, 2)}, prompts={"a": "x"})
    with pytest.raises(StoreError, match="train a head on a grid store"):
        store.load_embeddings(["a"])
    with pytest.raises(StoreError, match="another spec"):
        EmbeddingStore.open(store.path, GRID)
