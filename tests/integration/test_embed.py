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
from fiftyone_usam.errors import DatasetNotFoundError
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
