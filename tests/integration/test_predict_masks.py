"""Labelling never reads a store embedded with ``masks="none"`` (embeddings only, for training):
`predict` and `apply_model` take a store with masks of the same SAM and grid, or embed one; a
store without masks named for labelling is refused with what to do."""

import pytest

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import StoreError
from fiftyone_usam.fiftyone_io.datasets import recorded_stores
from tests.fixtures.head import label

TINY = {"points_per_side": 2, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def unmasked_head(image_files, tiny_checkpoint, tmp_path_factory):
    """A head trained from a store without masks; yields its directory."""
    import fiftyone as fo

    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in image_files])
    label(dataset, ["disc", "square"] * 3)
    folder = tmp_path_factory.mktemp("unmasked")
    usam.embed(dataset, store=folder / "store", checkpoint=tiny_checkpoint, masks="none", **TINY)
    out = folder / "head"
    usam.train_head(dataset, out=out, epochs=2, seed=0, device="cpu", progress=False)
    yield out
    dataset.delete()


def embed_without_masks(dataset, store, checkpoint):
    return usam.embed(dataset, store=store, checkpoint=checkpoint, masks="none", **TINY).store


def test_a_store_without_masks_named_for_labelling_is_refused(
    make_dataset, image_files, tiny_checkpoint, unmasked_head, tiny_clip_dir, tmp_path
):
    dataset = make_dataset(image_files[:2])
    store = embed_without_masks(dataset, tmp_path / "none", tiny_checkpoint)
    with pytest.raises(StoreError, match=r"holds no masks .*--masks full into another store"):
        usam.predict(dataset, head=unmasked_head, store=store, device="cpu")
    with pytest.raises(StoreError, match=r"holds no masks"):
        usam.baseline(
            dataset,
            method="sam-clip",
            field="clip",
            store=store,
            classes="disc,square",
            clip_model=tiny_clip_dir,
        )
    assert not dataset.has_field("usam_semantic")


def test_predict_embeds_into_a_store_with_masks_when_the_dataset_has_none(
    make_dataset, image_files, tiny_checkpoint, unmasked_head, tmp_path
):
    dataset = make_dataset(image_files[:3])
    none = embed_without_masks(dataset, tmp_path / "none", tiny_checkpoint)
    report = usam.predict(
        dataset, head=unmasked_head, checkpoint=tiny_checkpoint, threshold=0.0, device="cpu"
    )
    assert report.used_sam and report.labelled == 3
    dataset.reload()
    stores = [e["path"] for e in recorded_stores(dataset)]
    assert stores[0] == str(none.resolve()) and len(stores) == 2
    labelled_from = EmbeddingStore.open(stores[1])
    assert labelled_from.spec.has_masks and len(labelled_from) == 3
    assert labelled_from.spec == EmbeddingStore.open(none).spec.with_masks(True)

    # the head (its spec says "no masks") finds that store again: no SAM, for both paths
    again = usam.predict(dataset, head=unmasked_head, field="again", threshold=0.0, device="cpu")
    assert not again.used_sam and again.labelled == 3
    model = usam.load_model(unmasked_head, threshold=0.0)
    dataset.apply_model(model, label_field="applied")
    assert str(model.store.path) == stores[1]
    assert dataset.count("applied_semantic") == 3
