"""`baseline` and `usam baseline` end to end on the tiny SAM and the tiny CLIP."""

import io
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.writer import FieldExistsError, recorded_run
from fiftyone_usam.images import load_rgb
from fiftyone_usam.inference.labelers import OtsuLabeler, otsu_foreground
from fiftyone_usam.ontology import load_ontology
from fiftyone_usam.stages.baseline import baseline

CLASSES = "disc,square"


@pytest.fixture(scope="module")
def embedded(image_files, tiny_checkpoint):
    """A persistent dataset of the 6 test images, embedded with the tiny SAM (2x2 points)
    into a store recorded on it; each test writes its own fields."""
    import fiftyone as fo

    from fiftyone_usam.stages.embed import embed

    dataset = fo.Dataset(f"usam-baselines-{uuid.uuid4().hex[:8]}")
    dataset.persistent = True
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in image_files])
    report = embed(
        dataset, checkpoint=tiny_checkpoint, points_per_side=2, device="cpu", progress=False
    )
    yield dataset, report.store
    if fo.dataset_exists(dataset.name):
        fo.delete_dataset(dataset.name)


@pytest.fixture
def sam_clip(tiny_clip_dir):
    """Keyword arguments of a sam-clip run that keeps every mask CLIP can name."""
    return {
        "method": "sam-clip",
        "classes": CLASSES,
        "clip_model": tiny_clip_dir,
        "threshold": 0.5,  # 2 classes: every mask passes, so there is something to check
        "device": "cpu",
        "progress": False,
    }


def image_size(path):
    with Image.open(path) as image:
        return image.height, image.width


def no_sam(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("SAM must not be loaded when the store has every sample")

    from fiftyone_usam.embeddings import sam_backend

    monkeypatch.setattr(sam_backend, "load_sam", refuse)


def test_sam_clip_labels_the_stores_proposals(embedded, sam_clip, tiny_clip_dir, monkeypatch):
    import fiftyone as fo

    dataset, store_path = embedded
    no_sam(monkeypatch)
    report = baseline(dataset, field="clip", **sam_clip)
    assert (report.total, report.labelled, report.failed) == (6, 6, {})
    assert not report.used_sam and report.method == "sam-clip"
    assert report.store.resolve() == store_path.resolve()
    assert dataset.mask_targets["clip_semantic"] == {0: "background", 1: "disc", 2: "square"}
    schema = dataset.get_field_schema()
    assert schema["clip_semantic"].document_type is fo.Segmentation
    assert schema["clip_instances"].document_type is fo.Detections
    store = EmbeddingStore.open(store_path)
    kept = 0
    for sample in dataset:
        size = image_size(sample.filepath)
        assert sample.clip_semantic.mask.shape == size
        assert set(np.unique(sample.clip_semantic.mask)) <= {0, 1, 2}
        assert 0.0 <= sample.clip_uncertainty <= 1.0
        masks = store.get(sample.id).decode_masks()  # (d, 3, H, W): the same SAM masks
        best = store.get(sample.id).iou_predictions.argmax(axis=1)
        candidates = [masks[p, best[p]] for p in range(len(best))]
        for det in sample.clip_instances.detections:
            kept += 1
            assert det.label in ("disc", "square") and 0.5 <= det.confidence <= 1
            scale = [size[1], size[0], size[1], size[0]]
            x, y, w, h = np.round(np.array(det.bounding_box) * scale).astype(int)
            full = np.zeros(size, bool)
            full[y : y + h, x : x + w] = det.mask
            assert any(np.array_equal(full, c) for c in candidates)
    assert kept > 0
    run = recorded_run(dataset, "clip")
    assert run["baseline"] == "sam-clip" and run["clip_model"] == str(tiny_clip_dir.resolve())
    assert run["settings"]["threshold"] == 0.5 and run["settings"]["granularity"] == "best"
    assert run["store_spec"]["sam_variant"] == "tiny"


def test_sam_clip_reruns_resume_and_never_overwrite_silently(embedded, sam_clip, monkeypatch):
    dataset, _ = embedded
    no_sam(monkeypatch)
    baseline(dataset, field="again", **sam_clip)
    before = dataset.values("again_semantic.mask")
    rerun = baseline(dataset, field="again", **sam_clip)
    assert (rerun.labelled, rerun.already_done) == (0, 6)
    with pytest.raises(FieldExistsError, match=r"other settings.*--overwrite"):
        baseline(dataset, field="again", **{**sam_clip, "threshold": 0.9})
    redone = baseline(dataset, field="again", overwrite=True, **sam_clip)
    assert redone.labelled == 6
    for a, b in zip(before, dataset.values("again_semantic.mask"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sam_clip_reads_the_datasets_ontology(embedded, sam_clip, monkeypatch):
    from fiftyone_usam.fiftyone_io.training_dataset import ONTOLOGY_KEY

    dataset, _ = embedded
    no_sam(monkeypatch)
    settings = {k: v for k, v in sam_clip.items() if k != "classes"}
    with pytest.raises(ConfigError, match="--classes"):
        baseline(dataset, field="stored", **settings)
    dataset.info[ONTOLOGY_KEY] = load_ontology("cat,dog,bird").to_dict()
    dataset.save()
    try:
        report = baseline(dataset, field="stored", **settings)
    finally:
        dataset.info.pop(ONTOLOGY_KEY)
        dataset.save()
    assert report.classes == ("cat", "dog", "bird")
    assert dataset.mask_targets["stored_semantic"][3] == "bird"


def test_sam_clip_embeds_samples_without_proposals(
    make_dataset, image_files, sam_clip, tiny_checkpoint
):
    dataset = make_dataset(image_files[:2])
    report = baseline(
        dataset, field="fresh", checkpoint=tiny_checkpoint, points_per_side=2, **sam_clip
    )
    assert report.used_sam and report.labelled == 2
    assert EmbeddingStore.open(report.store).sample_ids() == set(dataset.values("id"))
    assert recorded_run(dataset, "fresh")["store_spec"]["points_per_side"] == 2


def test_otsu_end_to_end_and_a_corrupt_image(make_dataset, image_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(buffer, "JPEG")
    broken.write_bytes(buffer.getvalue()[:200])
    dataset = make_dataset([*image_files, broken])
    report = baseline(dataset, method="otsu", field="otsu", progress=False)
    bad = dataset.values("id")[-1]
    assert (report.labelled, list(report.failed)) == (6, [bad]) and report.store is None
    assert "broken.jpg" in report.failed[bad] and report.method == "otsu"
    assert dataset.mask_targets["otsu_semantic"] == {0: "background", 1: "foreground"}
    for sample in dataset.exists("otsu_semantic"):
        expected = otsu_foreground(load_rgb(sample.filepath))
        np.testing.assert_array_equal(sample.otsu_semantic.mask, expected.astype(np.uint8))
        assert all(d.label == "foreground" for d in sample.otsu_instances.detections)
    run = recorded_run(dataset, "otsu")
    assert run["baseline"] == "otsu" and "store" not in run
    assert run["settings"] == OtsuLabeler().describe()
    with pytest.raises(ConfigError, match="--classes do"):
        baseline(dataset, method="otsu", field="otsu2", classes=CLASSES)
    with pytest.raises(ConfigError, match="unknown baseline method"):
        baseline(dataset, method="kmeans", field="km")  # type: ignore[arg-type]


def test_label_view_refuses_a_proposal_labeler_without_a_store(make_dataset, image_files):
    from fiftyone_usam.fiftyone_io.labeling import label_view

    class NeedsProposals(OtsuLabeler):
        needs_proposals = True

    dataset = make_dataset(image_files[:1])
    with pytest.raises(ConfigError, match="pass the EmbeddingStore"):
        label_view(
            dataset.view(), dataset.values("id"), NeedsProposals(), None, field="x", settings={}
        )


def cli():
    """The baseline command in the real CLI's group (library errors -> exit 1)."""
    from fiftyone_usam.cli import _Group
    from fiftyone_usam.cli.baselines import baseline_command

    return _Group("usam", commands=[baseline_command])


def test_cli_baseline(embedded, tiny_clip_dir, monkeypatch):
    dataset, _ = embedded
    no_sam(monkeypatch)
    runner = CliRunner()
    args = ["baseline", "--method", "sam-clip", "--dataset", dataset.name, "--field", "cli"]
    args += ["--classes", CLASSES, "--clip-model", str(tiny_clip_dir), "--device", "cpu"]
    first = runner.invoke(cli(), [*args, "--threshold", "0.5"])
    assert first.exit_code == 0, first.output
    assert "sam-clip: 6 labelled" in first.output and "SAM not loaded" in first.output
    assert f"fiftyone app launch {dataset.name}" in first.output
    other = runner.invoke(cli(), [*args, "--threshold", "0.6"])
    assert other.exit_code == 1 and "--overwrite" in other.output
    replaced = runner.invoke(cli(), [*args, "--overwrite", "--granularity", "coarse"])
    assert replaced.exit_code == 0, replaced.output
    assert recorded_run(dataset, "cli")["settings"]["threshold"] == 0.7  # the paper's default
    otsu = runner.invoke(
        cli(), ["baseline", "--method", "otsu", "--dataset", dataset.name, "--field", "cli_otsu"]
    )
    assert otsu.exit_code == 0 and "otsu: 6 labelled" in otsu.output and "image only" in otsu.output
    hub = ["baseline", "--method", "sam-clip", "--dataset", dataset.name, "--field", "hub"]
    offline = runner.invoke(cli(), [*hub, "--classes", CLASSES, "--device", "cpu"])
    assert offline.exit_code == 1 and "--clip-model" in offline.output
    wrong = runner.invoke(cli(), [*args[:2], "kmeans", *args[3:]])
    assert wrong.exit_code == 2 and "kmeans" in wrong.output
