import io
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ConfigError, DatasetNotFoundError
from fiftyone_usam.fiftyone_io.datasets import find_store, recorded_stores
from tests.unit.test_store import assert_same


def shard_files(store):
    return sorted(p.name for p in (store / "shards").glob("*.safetensors"))


def test_embed_fills_the_store_and_a_second_run_does_no_work(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(image_files)
    store = tmp_path / "store"
    report = usam.embed(
        dataset,
        store=store,
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=4,
        device="cpu",
        batch_size=2,
        shard_size=4,
    )
    assert (report.total, report.embedded, report.already_done, report.failed) == (6, 6, 0, {})
    opened = EmbeddingStore.open(store)
    assert opened.sample_ids() == set(dataset.values("id"))
    assert opened.spec.sam_variant == "tiny" and opened.spec.points_per_side == 4
    for sample in dataset:
        proposals = opened.get(sample.id)
        with Image.open(sample.filepath) as image:
            assert proposals.image_size == (image.height, image.width)
    shards = shard_files(store)
    assert len(shards) == 2  # 4 + 2 images

    again = usam.embed(
        dataset.name,
        store=store,
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=4,
        device="cpu",
    )
    assert (again.embedded, again.already_done) == (0, 6)
    assert shard_files(store) == shards


def test_store_location_is_recorded_on_the_dataset(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(image_files[:2])
    report = usam.embed(
        dataset,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=2,
        device="cpu",
    )
    dataset.reload()
    (entry,) = recorded_stores(dataset)
    assert entry["path"] == str((tmp_path / "s").resolve())
    assert entry["spec"]["sam_variant"] == "tiny"
    assert find_store(dataset, report.spec) == (tmp_path / "s").resolve()
    assert find_store(dataset.limit(1)) == (tmp_path / "s").resolve()


def test_default_store_location(make_dataset, image_files, tiny_checkpoint):
    import fiftyone as fo

    dataset = make_dataset(image_files[:1])
    report = usam.embed(
        dataset, sam="tiny", checkpoint=tiny_checkpoint, points_per_side=2, device="cpu"
    )
    expected = os.path.join(
        fo.config.default_dataset_dir, "usam", dataset.name, "embeddings-tiny-p2"
    )
    assert str(report.store) == expected and len(EmbeddingStore.open(expected)) == 1


def test_view_tag_selects_samples(make_dataset, image_files, tiny_checkpoint, tmp_path):
    tags = [["train"] if i % 2 else [] for i in range(len(image_files))]
    dataset = make_dataset(image_files, tags=tags)
    report = usam.embed(
        dataset.name,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        view_tag="train",
        points_per_side=2,
        device="cpu",
    )
    assert report.total == 3
    assert EmbeddingStore.open(tmp_path / "s").sample_ids() == set(
        dataset.match_tags("train").values("id")
    )
    with pytest.raises(
        DatasetNotFoundError, match=r"no sample of .* has the tag 'val' \(tags: train\)"
    ):
        usam.embed(
            dataset.name,
            store=tmp_path / "s",
            sam="tiny",
            checkpoint=tiny_checkpoint,
            view_tag="val",
            points_per_side=2,
            device="cpu",
        )


def test_odd_images_are_handled(make_dataset, tmp_path, tiny_checkpoint):
    """Grayscale, RGBA, 16-bit and EXIF-rotated files embed at their displayed size."""
    gray = tmp_path / "gray.png"
    Image.fromarray(np.tile(np.arange(40, dtype=np.uint8) * 6, (30, 1)), mode="L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.full((24, 36, 4), 200, np.uint8), mode="RGBA").save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(np.arange(32 * 20, dtype=np.uint16).reshape(20, 32) * 90).save(deep)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((20, 44, 3), 90, np.uint8)).save(rotated, exif=exif.tobytes())
    dataset = make_dataset([gray, rgba, deep, rotated])
    report = usam.embed(
        dataset,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=2,
        device="cpu",
    )
    assert report.failed == {} and report.embedded == 4
    store = EmbeddingStore.open(tmp_path / "s")
    sizes = [store.get(i).image_size for i in dataset.values("id")]
    assert sizes == [(30, 40), (24, 36), (20, 32), (44, 20)]


def test_unreadable_images_are_reported_and_skipped(
    make_dataset, image_files, tmp_path, tiny_checkpoint
):
    truncated = tmp_path / "truncated.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(buffer, "JPEG")
    truncated.write_bytes(buffer.getvalue()[:300])
    html = tmp_path / "page.jpg"
    html.write_text("<html>404</html>")
    missing = tmp_path / "gone.png"
    dataset = make_dataset(
        [image_files[0], truncated, image_files[1], html, missing, image_files[2]]
    )
    ids = dataset.values("id")
    report = usam.embed(
        dataset,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=2,
        device="cpu",
        batch_size=2,
        shard_size=2,
    )
    assert set(report.failed) == {ids[1], ids[3], ids[4]}
    assert "truncated.jpg" in report.failed[ids[1]]
    assert "not a readable image" in report.failed[ids[3]]
    assert "not found" in report.failed[ids[4]]
    assert EmbeddingStore.open(tmp_path / "s").sample_ids() == {ids[0], ids[2], ids[5]}
    assert report.embedded == 3


def test_interrupted_run_keeps_finished_work(make_dataset, image_files, tiny_checkpoint, tmp_path):
    dataset = make_dataset(image_files)

    def stop_after_four(done, total):
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        usam.embed(
            dataset,
            store=tmp_path / "s",
            sam="tiny",
            checkpoint=tiny_checkpoint,
            points_per_side=2,
            device="cpu",
            batch_size=2,
            shard_size=100,
            progress=stop_after_four,
        )
    assert len(EmbeddingStore.open(tmp_path / "s")) == 4  # flushed although the shard was not full
    report = usam.embed(
        dataset,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=2,
        device="cpu",
    )
    assert (report.embedded, report.already_done) == (2, 4)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import fiftyone_usam as usam

    def die(done, total):
        if done >= int(sys.argv[4]):
            os.kill(os.getpid(), signal.SIGKILL)

    usam.embed(sys.argv[1], store=sys.argv[2], sam="tiny", checkpoint=sys.argv[3],
               points_per_side=3, device="cpu", batch_size=1, shard_size=1, progress=die)
""")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_content(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    """A run killed with SIGKILL half-way, then resumed, ends equal to an uninterrupted run."""
    dataset = make_dataset(image_files)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = subprocess.run(
        [
            sys.executable,
            str(script),
            dataset.name,
            str(tmp_path / "resumed"),
            str(tiny_checkpoint),
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(EmbeddingStore.open(tmp_path / "resumed")) == 3
    resumed = usam.embed(
        dataset,
        store=tmp_path / "resumed",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=3,
        device="cpu",
        batch_size=1,
    )
    assert (resumed.embedded, resumed.already_done) == (3, 3)
    usam.embed(
        dataset,
        store=tmp_path / "straight",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=3,
        device="cpu",
        batch_size=1,
    )
    a, b = EmbeddingStore.open(tmp_path / "resumed"), EmbeddingStore.open(tmp_path / "straight")
    assert a.spec == b.spec and a.sample_ids() == b.sample_ids() == set(dataset.values("id"))
    for sample_id in dataset.values("id"):
        assert_same(a.get(sample_id), b.get(sample_id))
    assert json.loads((tmp_path / "resumed" / "spec.json").read_text()) == json.loads(
        (tmp_path / "straight" / "spec.json").read_text()
    )


def test_store_of_another_spec_is_refused_before_any_work(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    from fiftyone_usam.errors import StoreError

    dataset = make_dataset(image_files[:1])
    usam.embed(
        dataset,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=2,
        device="cpu",
    )
    with pytest.raises(StoreError, match=r"points_per_side: store has 2, asked for 3"):
        usam.embed(
            dataset,
            store=tmp_path / "s",
            sam="tiny",
            checkpoint=tiny_checkpoint,
            points_per_side=3,
            device="cpu",
        )


def test_missing_dataset_is_explained():
    with pytest.raises(DatasetNotFoundError, match=r"no FiftyOne dataset named 'no-such-dataset'"):
        usam.embed("no-such-dataset", store="/tmp/x", sam="tiny")


# -- masks="none": embeddings only, for training images -------------------------------------


def store_bytes(store):
    return sum(p.stat().st_size for p in (store / "shards").glob("*.safetensors"))


def test_embed_without_masks_keeps_only_the_embeddings(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    from click.testing import CliRunner
    from safetensors import safe_open

    from fiftyone_usam.cli import main
    from fiftyone_usam.errors import StoreError

    dataset = make_dataset(image_files)
    common = dict(sam="tiny", checkpoint=tiny_checkpoint, points_per_side=4, device="cpu")
    usam.embed(dataset, store=tmp_path / "full", **common)
    args = ["embed", "--dataset", dataset.name, "--store", tmp_path / "none", "--masks", "none"]
    args += ["--checkpoint", tiny_checkpoint, "--points-per-side", 4, "--device", "cpu"]
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "6 embedded" in result.output

    full, none = EmbeddingStore.open(tmp_path / "full"), EmbeddingStore.open(tmp_path / "none")
    assert none.spec == full.spec.with_masks(False) and none.spec.mask_format == "none"
    for shard in (tmp_path / "none" / "shards").glob("*.safetensors"):
        with safe_open(str(shard), framework="np") as f:
            assert not {"rle_bytes", "rle_offsets"} & set(f.keys())
            assert np.isnan(f.get_tensor("stability_scores")).all()
    ids = dataset.values("id")
    np.testing.assert_array_equal(none.load_embeddings(ids), full.load_embeddings(ids))
    for sample_id, proposals in none.iter_proposals(ids):
        assert not proposals.has_masks and proposals.mask_rles == ()
        np.testing.assert_array_equal(
            proposals.iou_predictions, full.get(sample_id).iou_predictions
        )
        assert proposals.image_size == full.get(sample_id).image_size
    assert store_bytes(tmp_path / "none") < store_bytes(tmp_path / "full")

    again = usam.embed(dataset, store=tmp_path / "none", masks="none", **common)
    assert (again.embedded, again.already_done) == (0, 6)  # resumes like any store
    with pytest.raises(StoreError, match=r"mask_format: store has 'none', asked for 'coco_rle'"):
        usam.embed(dataset, store=tmp_path / "none", **common)


def test_a_store_without_masks_has_its_own_default_location(
    make_dataset, image_files, tiny_checkpoint
):
    import fiftyone as fo

    from fiftyone_usam.errors import ConfigError

    dataset = make_dataset(image_files[:1])
    common = dict(sam="tiny", checkpoint=tiny_checkpoint, points_per_side=2, device="cpu")
    full = usam.embed(dataset, **common)
    none = usam.embed(dataset, masks="none", **common)  # the newest store on the dataset
    folder = os.path.join(fo.config.default_dataset_dir, "usam", dataset.name)
    assert str(none.store) == os.path.join(folder, "embeddings-tiny-p2-nomasks")
    assert str(full.store) == os.path.join(folder, "embeddings-tiny-p2")
    assert none.embedded == 1  # a store with masks is not one without
    dataset.reload()
    assert find_store(dataset) == full.store  # labelling: the store with masks
    assert find_store(dataset, masks=False) == none.store
    with pytest.raises(ConfigError, match=r"masks must be one of full, none, not 'some'"):
        usam.embed(dataset, masks="some", **common)  # type: ignore[arg-type]


# -- speed switches: mask_encoding, encoder_attention, encode_workers -------------------------


def test_the_speed_switches_do_not_change_the_store(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    """Batches pipelined (host work overlapping the next batch) or taken one by one in line,
    masks encoded on the device or the host: the same shards, the same spec."""
    dataset = make_dataset(image_files)
    common = dict(sam="tiny", checkpoint=tiny_checkpoint, points_per_side=4, device="cpu")
    common.update(batch_size=2, shard_size=3)  # shards that straddle batches
    inline = usam.embed(
        dataset, store=tmp_path / "a", encode_workers=0, mask_encoding="host", **common
    )
    piped = usam.embed(dataset, store=tmp_path / "b", encode_workers=2, **common)
    assert inline.embedded == piped.embedded == 6 and inline.spec == piped.spec
    a, b = EmbeddingStore.open(tmp_path / "a"), EmbeddingStore.open(tmp_path / "b")
    assert len(shard_files(tmp_path / "a")) == len(shard_files(tmp_path / "b")) == 2
    for sample_id in dataset.values("id"):
        assert_same(a.get(sample_id), b.get(sample_id))
    assert (tmp_path / "a" / "spec.json").read_text() == (tmp_path / "b" / "spec.json").read_text()
    again = usam.embed(dataset, store=tmp_path / "a", encoder_attention="sdpa", **common)
    assert (again.embedded, again.already_done) == (0, 6)  # not in the spec: resumed as it is
    with pytest.raises(ConfigError, match=r"mask_encoding must be one of device, host"):
        usam.embed(dataset, store=tmp_path / "c", mask_encoding="gpu", **common)
    assert not (tmp_path / "c").exists()  # refused before the store was made


def test_the_cli_speed_options_reach_the_extractor(
    make_dataset, image_files, tiny_checkpoint, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from fiftyone_usam.cli import main
    from fiftyone_usam.embeddings.extractor import MaskEmbeddingExtractor

    seen = []
    init = MaskEmbeddingExtractor.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append((self.mask_encoding, self.encoder_attention, self.encode_workers))

    monkeypatch.setattr(MaskEmbeddingExtractor, "__init__", recording)
    dataset = make_dataset(image_files[:2])
    args = ["embed", "--dataset", dataset.name, "--checkpoint", tiny_checkpoint, "--device", "cpu"]
    args += ["--points-per-side", 2, "--store", tmp_path / "s"]
    speed = ["--mask-encoding", "host", "--encoder-attention", "sdpa", "--encode-workers", 3]
    for extra in ([], speed):
        result = CliRunner().invoke(main, [str(a) for a in args + extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert seen == [("device", "reference", 1), ("host", "sdpa", 3)]  # auto: reference on CPU
    bad = CliRunner().invoke(main, [str(a) for a in [*args, "--mask-encoding", "gpu"]])
    assert bad.exit_code != 0 and "'gpu' is not one of 'device', 'host'" in bad.output


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("part", ["device", "host"])
@pytest.mark.parametrize("bad", [2, 5])  # the first image of a batch; the last of the run
def test_an_image_sam_fails_on_is_reported_alone(
    make_dataset, image_files, tiny_checkpoint, tmp_path, monkeypatch, workers, part, bad
):
    """The batch is tried again image by image: only the image SAM fails on is lost, whether
    the device's part (encoder, decoder) or the host's (RLE strings, in the pool) fails."""
    dataset = make_dataset(image_files)
    ids = dataset.values("id")
    bad_size = Image.open(image_files[bad]).size[::-1]
    _fail_on_size(monkeypatch, part, bad_size)
    report = usam.embed(
        dataset,
        store=tmp_path / "s",
        sam="tiny",
        checkpoint=tiny_checkpoint,
        points_per_side=2,
        device="cpu",
        batch_size=2,
        shard_size=4,
        encode_workers=workers,
    )
    assert report.failed == {ids[bad]: "SAM failed on this image (RuntimeError: no such image)"}
    assert report.embedded == 5
    assert EmbeddingStore.open(tmp_path / "s").sample_ids() == set(ids) - {ids[bad]}


@pytest.mark.parametrize("part", ["device", "host"])
def test_sam_failing_before_any_image_succeeded_is_raised(
    make_dataset, image_files, tiny_checkpoint, tmp_path, monkeypatch, part
):
    """The first image failing on its own points at the setup, not the image: raised."""
    dataset = make_dataset(image_files[:3])
    _fail_on_size(monkeypatch, part, Image.open(image_files[0]).size[::-1])
    with pytest.raises(RuntimeError, match="no such image"):
        usam.embed(
            dataset,
            store=tmp_path / "s",
            sam="tiny",
            checkpoint=tiny_checkpoint,
            points_per_side=2,
            device="cpu",
            batch_size=2,
        )
    assert len(EmbeddingStore.open(tmp_path / "s")) == 0


def _fail_on_size(monkeypatch, part, size):
    """SAM raises on images of ``size`` `(H, W)`: in the device's part of the work (the encoder,
    for the whole batch it is in) or in the host's (its masks' RLE strings)."""
    from fiftyone_usam.embeddings import extractor as module

    if part == "device":
        encode = module.MaskEmbeddingExtractor.encode

        def failing_encode(self, images):
            if any(image.shape[:2] == size for image in images):
                raise RuntimeError("no such image")
            return encode(self, images)

        monkeypatch.setattr(module.MaskEmbeddingExtractor, "encode", failing_encode)
        return
    with_masks = module._with_masks

    def failing_host(proposals, parts):
        if proposals.image_size == size:
            raise RuntimeError("no such image")
        return with_masks(proposals, parts)

    monkeypatch.setattr(module, "_with_masks", failing_host)
