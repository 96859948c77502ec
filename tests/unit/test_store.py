import json
from dataclasses import replace

import numpy as np
import pytest

from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import StoreError
from fiftyone_usam.files import temp_path
from fiftyone_usam.masks import encode_masks

SPEC = StoreSpec(
    sam_variant="tiny", checkpoint_sha256="ab" * 32, points_per_side=2, encoder_input_size=256
)


def fake_proposals(seed: int, h: int = 6, w: int = 5) -> MaskProposals:
    rng = np.random.default_rng(seed)
    masks = rng.random((h, w, 12)) > 0.5
    return MaskProposals(
        embeddings=rng.standard_normal((4, 1024)).astype(np.float16),
        iou_predictions=rng.random((4, 3), dtype=np.float32),
        stability_scores=rng.random((4, 3), dtype=np.float32),
        points=rng.random((4, 2), dtype=np.float32) * 5,
        image_size=(h, w),
        mask_rles=tuple(encode_masks(np.asfortranarray(masks.astype(np.uint8)))),
    )


def assert_same(a: MaskProposals, b: MaskProposals) -> None:
    for name in ("embeddings", "iou_predictions", "stability_scores", "points"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.image_size == b.image_size and a.mask_rles == b.mask_rles


def test_round_trip(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", SPEC)
    items = {f"id{i}": fake_proposals(i, h=6 + i) for i in range(5)}
    store.write(dict(list(items.items())[:2]))
    store.write(dict(list(items.items())[2:]))
    reopened = EmbeddingStore.open(tmp_path / "s", SPEC)
    assert reopened.sample_ids() == set(items) and len(reopened) == 5 and "id3" in reopened
    for sample_id, proposals in items.items():
        assert_same(reopened.get(sample_id), proposals)
    order = ["id4", "id0", "id3", "id2"]
    got = list(reopened.iter_proposals(order))
    assert [k for k, _ in got] == order
    for k, p in got:
        assert_same(p, items[k])
    stacked = reopened.load_embeddings(order)
    assert stacked.shape == (4, 4, 1024) and stacked.dtype == np.float16
    for row, k in enumerate(order):
        np.testing.assert_array_equal(stacked[row], items[k].embeddings)
    decoded = reopened.get("id1").decode_masks()
    assert decoded.shape == (4, 3, 7, 5)


def test_spec_file_is_readable_json(tmp_path):
    EmbeddingStore.create(tmp_path / "s", SPEC)
    spec = json.loads((tmp_path / "s" / "spec.json").read_text())
    assert spec["sam_variant"] == "tiny" and spec["points_per_side"] == 2
    assert spec["embedding_dim"] == 1024 and spec["embedding_dtype"] == "float16"
    assert spec["format_version"] == 1


def test_stored_ids_are_not_written_again(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", SPEC)
    store.write({"a": fake_proposals(0)})
    assert store.write({"a": fake_proposals(1)}) is None
    assert_same(store.get("a"), fake_proposals(0))
    assert len(list((tmp_path / "s" / "shards").iterdir())) == 1


def test_other_spec_is_refused_with_the_differences(tmp_path):
    EmbeddingStore.create(tmp_path / "s", SPEC)
    other = StoreSpec("vit_h", "cd" * 32, 10, 1024)
    with pytest.raises(
        StoreError,
        match=r"sam_variant: store has 'tiny', asked for 'vit_h'.*"
        r"points_per_side: store has 2, asked for 10.*different --store",
    ):
        EmbeddingStore.create(tmp_path / "s", other)
    with pytest.raises(StoreError, match=r"another spec"):
        EmbeddingStore.open(tmp_path / "s", other)


def test_missing_and_foreign_directories(tmp_path):
    with pytest.raises(StoreError, match=r"no EmbeddingStore at .*usam embed --store"):
        EmbeddingStore.open(tmp_path / "nothing")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match=r"not an EmbeddingStore"):
        EmbeddingStore.create(tmp_path / "busy", SPEC)


def test_embeddings_of_the_wrong_shape_are_refused(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", StoreSpec("tiny", "ab" * 32, 3, 256))
    with pytest.raises(
        StoreError,
        match=r"shape \(4, 1024\) with 3 mask\(s\) per prompt and 0 prompt id\(s\) do not fit",
    ):
        store.write({"a": fake_proposals(0)})


def test_unknown_sample_is_a_key_error(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", SPEC)
    with pytest.raises(KeyError, match=r"not in the EmbeddingStore"):
        store.get("nope")


def test_leftovers_of_a_killed_writer(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", SPEC)
    store.write({"a": fake_proposals(0)})
    shards = tmp_path / "s" / "shards"
    dead = shards / ".000001-deadbeef.safetensors.usam-tmp-999999999-0"  # no such process
    alive = temp_path(shards / "000001-cafecafe.safetensors")  # this process
    dead.write_bytes(b"half a shard")
    alive.write_bytes(b"being written")
    reopened = EmbeddingStore.open(tmp_path / "s")
    assert reopened.sample_ids() == {"a"}  # temporary files are never read
    assert reopened.remove_stale_temp_files() == 1
    assert not dead.exists() and alive.exists()


def test_damaged_shard_is_explained(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", SPEC)
    shard = store.write({"a": fake_proposals(0)})
    shard.write_bytes(shard.read_bytes()[:50])
    with pytest.raises(StoreError, match=r"cannot read shard .*Delete it"):
        len(EmbeddingStore.open(tmp_path / "s"))


# -- stores without masks (masks="none") ---------------------------------------------------

NO_MASKS = SPEC.with_masks(False)


def without_masks(proposals: MaskProposals) -> MaskProposals:
    """``proposals`` as the extractor gives them with masks="none": no RLEs, NaN stability."""
    return replace(
        proposals, mask_rles=(), stability_scores=np.full_like(proposals.stability_scores, np.nan)
    )


def shard_arrays(shard) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(shard), framework="np") as f:
        return set(f.keys())


def test_a_store_without_masks_holds_no_mask_arrays_and_reads_back_without_masks(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", NO_MASKS)
    items = {f"id{i}": without_masks(fake_proposals(i)) for i in range(3)}
    shard = store.write(items)
    assert shard_arrays(shard) == {
        "embeddings",
        "iou_predictions",
        "stability_scores",
        "points",
        "image_sizes",
    }  # no rle_bytes, no rle_offsets
    spec = json.loads((tmp_path / "s" / "spec.json").read_text())
    assert spec["mask_format"] == "none" and "no masks" in NO_MASKS.describe()

    reopened = EmbeddingStore.open(tmp_path / "s", NO_MASKS)  # checksums verified on read
    assert not reopened.spec.has_masks
    for sample_id, proposals in reopened.iter_proposals(["id2", "id0"]):
        assert not proposals.has_masks and proposals.mask_rles == ()
        np.testing.assert_array_equal(proposals.embeddings, items[sample_id].embeddings)
        np.testing.assert_array_equal(proposals.iou_predictions, items[sample_id].iou_predictions)
        assert proposals.image_size == (6, 5)
    np.testing.assert_array_equal(reopened.load_embeddings(["id1"])[0], items["id1"].embeddings)
    with pytest.raises(StoreError, match=r"hold no masks.*--masks full"):
        reopened.get("id0").decode_masks()


def test_the_same_proposals_take_less_space_without_masks(tmp_path):
    full = EmbeddingStore.create(tmp_path / "full", SPEC)
    none = EmbeddingStore.create(tmp_path / "none", NO_MASKS)
    items = {f"id{i}": fake_proposals(i, h=60, w=50) for i in range(3)}
    full_shard = full.write(items)
    none_shard = none.write({k: without_masks(v) for k, v in items.items()})
    assert {"rle_bytes", "rle_offsets"} <= shard_arrays(full_shard)
    assert none_shard.stat().st_size < full_shard.stat().st_size


def test_proposals_whose_masks_do_not_fit_the_store_are_refused(tmp_path):
    full = EmbeddingStore.create(tmp_path / "full", SPEC)
    with pytest.raises(StoreError, match=r"sample a: .*keeps masks.*masks='full'"):
        full.write({"a": without_masks(fake_proposals(0))})
    none = EmbeddingStore.create(tmp_path / "none", NO_MASKS)
    with pytest.raises(StoreError, match=r"sample a: .*holds no masks.*masks='none'"):
        none.write({"a": fake_proposals(0)})
    assert len(full) == 0 and len(none) == 0  # nothing written


def test_a_store_keeps_its_mask_format(tmp_path):
    EmbeddingStore.create(tmp_path / "s", SPEC)
    with pytest.raises(StoreError, match=r"mask_format: store has 'coco_rle', asked for 'none'"):
        EmbeddingStore.create(tmp_path / "s", NO_MASKS)
    assert NO_MASKS.with_masks(True) == SPEC


def test_a_spec_written_before_mask_formats_reads_as_keeping_masks(tmp_path):
    store = EmbeddingStore.create(tmp_path / "s", SPEC)
    store.write({"a": fake_proposals(0)})
    spec_file = tmp_path / "s" / "spec.json"
    old = json.loads(spec_file.read_text())
    del old["mask_format"]
    spec_file.write_text(json.dumps(old))
    reopened = EmbeddingStore.open(tmp_path / "s", SPEC)
    assert reopened.spec.mask_format == "coco_rle" and reopened.spec.has_masks
    assert_same(reopened.get("a"), fake_proposals(0))


def test_an_index_update_reads_only_new_shards_and_the_newest_row_wins(tmp_path):
    reader = EmbeddingStore.create(tmp_path / "s", SPEC)
    writer = EmbeddingStore.open(tmp_path / "s", SPEC)
    reader.write({"a": fake_proposals(0)})
    assert reader.sample_ids() == {"a"}
    writer.write({"b": fake_proposals(1)})
    writer.write({"a": fake_proposals(2)}, replace=True)  # another writer replaces "a"
    reader.update_index()
    assert reader.sample_ids() == {"a", "b"}
    assert_same(reader.get("a"), fake_proposals(2))
    reader.update_index()  # nothing new: the same index
    assert_same(reader.get("a"), fake_proposals(2))
    assert len(reader) == 2
