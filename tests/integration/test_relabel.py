"""Re-labelling from a store: batched head passes and bulk writes give the reference's labels.

A head trained on planted bags labels a dataset whose proposals are planted in a store (random
blocky masks, so instances overlap and NMS, crops and the semantic map all have work to do).
The reference path (``label_batch_size=1, bulk_writes=False``: one image at a time, FiftyOne's
label objects saved sample by sample) and the fast path must write the same labels.
"""

import numpy as np
import pytest
from PIL import Image

import fiftyone_usam as usam
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.datasets import record_store
from fiftyone_usam.head.config import TrainConfig
from fiftyone_usam.head.model import HeadConfig
from fiftyone_usam.head.train import fit_head
from fiftyone_usam.masks import encode_masks
from fiftyone_usam.testing.planted import make_planted_bags

SIZE = (37, 53)
REFERENCE = {"label_batch_size": 1, "bulk_writes": False}
FAST = {"label_batch_size": 3}  # 10 samples: batches of 3, 3, 3 and 1


def blocky_proposals(embeddings, rng):
    d = len(embeddings)
    masks = np.zeros((*SIZE, 3 * d), np.uint8)
    for j in range(3 * d):
        y, x = rng.integers(0, SIZE[0] - 4), rng.integers(0, SIZE[1] - 4)
        masks[y : y + rng.integers(2, 20), x : x + rng.integers(2, 30), j] = 1
    iou = rng.random((d, 3)).astype(np.float32)
    return MaskProposals(
        embeddings.astype(np.float16),
        iou,
        np.ones_like(iou),
        np.zeros((d, 2), np.float32),
        SIZE,
        tuple(encode_masks(masks)),
    )


@pytest.fixture
def planted(make_dataset, tmp_path):
    """``(dataset, head)``: 10 images whose store holds planted proposals."""
    train, held = make_planted_bags(
        3, 8, masks_per_image=25, objects=(3, 6), parts=(4, 8), seed=0
    ).split(4)
    head = fit_head(
        train.embeddings,
        train.labels,
        train.classes,
        TrainConfig(epochs=4, batch_size=8, device="cpu"),
        HeadConfig(hidden_dim=16),
    )
    head.store_spec = StoreSpec("planted", "0" * 64, 5, 1024)  # 5x5 points: 25 masks
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((*SIZE, 3), i * 20, np.uint8)).save(paths[-1])
    dataset = make_dataset(paths)
    store = EmbeddingStore.create(tmp_path / "store", head.store_spec)
    rng = np.random.default_rng(0)
    ids = dataset.values("id")
    store.write(
        {i: blocky_proposals(held.embeddings[k % len(held.labels)], rng) for k, i in enumerate(ids)}
    )
    record_store(dataset, store)
    return dataset, head


def written(dataset, field):
    """Every value a run wrote, per sample, ids left out."""
    out = {}
    for sample in dataset.select_fields(
        [f"{field}_semantic", f"{field}_instances", f"{field}_uncertainty"]
    ):
        semantic = sample[f"{field}_semantic"]
        detections = sample[f"{field}_instances"].detections
        out[sample.id] = (
            semantic.get_mask() if semantic.mask is None else semantic.mask,
            [
                (
                    d.label,
                    d.confidence,
                    tuple(d.bounding_box),
                    d.get_mask() if d.mask is None else d.mask,
                    d["entropy"],
                    d.tags,
                )
                for d in detections
            ],
            sample[f"{field}_uncertainty"],
        )
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key][0], b[key][0])
        assert a[key][0].dtype == b[key][0].dtype
        assert len(a[key][1]) == len(b[key][1])
        for x, y in zip(a[key][1], b[key][1], strict=True):
            assert (x[0], x[2], x[5]) == (y[0], y[2], y[5])
            np.testing.assert_array_equal(x[3], y[3])
            assert x[3].dtype == y[3].dtype
            np.testing.assert_allclose([x[1], x[4]], [y[1], y[4]], rtol=1e-6)
        assert a[key][2] == pytest.approx(b[key][2], rel=1e-6)


def schema_of(dataset, field):
    schema = dataset.get_field_schema(flat=True)
    return {
        k.replace(field, "F", 1): type(v).__name__ for k, v in schema.items() if k.startswith(field)
    }


def test_batched_bulk_labels_equal_the_one_at_a_time_reference(planted):
    dataset, head = planted
    usam.predict(dataset, head=head, field="ref", threshold=0.0, progress=False, **REFERENCE)
    report = usam.predict(dataset, head=head, field="fast", threshold=0.0, progress=False, **FAST)
    assert (report.labelled, report.used_sam) == (10, False)
    reference, fast = written(dataset, "ref"), written(dataset, "fast")
    assert sum(len(v[1]) for v in fast.values()) > 20  # overlapping instances to crop and paint
    assert_same(reference, fast)
    assert schema_of(dataset, "ref") == schema_of(dataset, "fast")
    assert dataset.mask_targets["ref_semantic"] == dataset.mask_targets["fast_semantic"]
    # FiftyOne's own queries read the bulk-written documents
    assert dataset.count("fast_instances.detections") == dataset.count("ref_instances.detections")
    assert dataset.bounds("fast_uncertainty") == dataset.bounds("ref_uncertainty")
    assert dataset.first().fast_instances.detections[0].mask.dtype == bool


def test_masks_on_disk_are_the_same_files(planted, tmp_path):
    dataset, head = planted
    common = {"threshold": 0.0, "progress": False}
    usam.predict(dataset, head=head, field="ref", mask_dir=tmp_path / "ref", **common, **REFERENCE)
    usam.predict(dataset, head=head, field="fast", mask_dir=tmp_path / "fast", **common, **FAST)
    reference, fast = written(dataset, "ref"), written(dataset, "fast")
    assert_same(reference, fast)
    sample = dataset.first()
    assert sample.fast_semantic.mask is None and sample.fast_semantic.mask_path.startswith(
        str(tmp_path / "fast")
    )
    files = sorted(p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref").rglob("*.png"))
    assert files == sorted(
        p.relative_to(tmp_path / "fast") for p in (tmp_path / "fast").rglob("*.png")
    )
    for name in files:
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "ref" / name)),
            np.asarray(Image.open(tmp_path / "fast" / name)),
        )


class Stop(Exception):
    pass


def test_a_stopped_run_keeps_whole_samples_and_resumes_to_the_same_labels(planted):
    dataset, head = planted

    def stop_after_two_batches(done, total):
        if done >= 6:
            raise Stop

    with pytest.raises(Stop):
        usam.predict(
            dataset, head=head, field="fast", threshold=0.0, progress=stop_after_two_batches, **FAST
        )
    labelled = dataset.exists("fast_semantic")
    done = len(labelled)
    assert 6 <= done < 10
    # a sample with its semantic map has the other two fields as well
    assert len(labelled.exists("fast_instances").exists("fast_uncertainty")) == done
    report = usam.predict(dataset, head=head, field="fast", threshold=0.0, progress=False, **FAST)
    assert (report.already_done, report.labelled) == (done, 10 - done)
    usam.predict(dataset, head=head, field="ref", threshold=0.0, progress=False, **REFERENCE)
    assert_same(written(dataset, "ref"), written(dataset, "fast"))


def test_label_batch_size_must_be_positive(planted):
    dataset, head = planted
    with pytest.raises(ConfigError, match="batch_size must be at least 1"):
        usam.predict(dataset, head=head, field="x", label_batch_size=0, progress=False)
