"""The ray engine on a real local Ray (started once for this module): the same store as a local
run, a killed actor, a killed and re-run driver, a refused spec, a bad address, no Ray."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import ray

import fiftyone_usam as usam
from fiftyone_usam.embeddings.shards import read_header
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import ConfigError, StoreError

EMBED = {"sam": "tiny", "points_per_side": 3, "device": "cpu", "batch_size": 2, "shard_size": 2}


@pytest.fixture
def many_images(image_files, tmp_path):
    """``n`` images: the six test images again under other names."""

    def make(n):
        out = []
        for i in range(n):
            source = image_files[i % len(image_files)]
            target = tmp_path / "many" / f"{i}_{source.name}"
            target.parent.mkdir(exist_ok=True)
            shutil.copy(source, target)
            out.append(target)
        return out

    return make


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs for the module, its address for subprocess drivers."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def assert_same_store(a, b, ids):
    """Embeddings (float16) bit-equal and masks equal; the float32 scores equal to rounding.

    A Ray actor given one CPU runs torch on one thread, this process on two: matrix products
    sum in another order, and float32 IoU predictions differ in their last bits (4e-8 seen).
    """
    a, b = EmbeddingStore.open(a), EmbeddingStore.open(b)
    assert a.spec == b.spec and a.sample_ids() == b.sample_ids() == set(ids)
    for sample_id in ids:
        x, y = a.get(sample_id), b.get(sample_id)
        np.testing.assert_array_equal(x.embeddings, y.embeddings)
        np.testing.assert_array_equal(x.points, y.points)
        assert x.image_size == y.image_size and x.mask_rles == y.mask_rles
        for name in ("iou_predictions", "stability_scores"):
            np.testing.assert_allclose(getattr(x, name), getattr(y, name), rtol=1e-5, atol=1e-6)


def rows_per_sample(store):
    """How many shard rows hold each sample id (1 each: nothing written twice)."""
    counts: dict[str, int] = {}
    for shard in (store / "shards").glob("*.safetensors"):
        for sample_id in read_header(shard).sample_ids:
            counts[sample_id] = counts.get(sample_id, 0) + 1
    return counts


def test_two_workers_fill_the_store_a_local_run_fills(
    local_ray, make_dataset, image_files, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(image_files)
    local = usam.embed(dataset, store=tmp_path / "local", checkpoint=tiny_checkpoint, **EMBED)
    on_ray = usam.embed(
        dataset,
        store=tmp_path / "ray",
        checkpoint=tiny_checkpoint,
        engine="ray",
        workers=2,
        **EMBED,
    )
    assert (local.embedded, on_ray.embedded, on_ray.failed) == (6, 6, {})
    assert on_ray.execution["engine"] == "ray" and on_ray.execution["workers"] == 2
    assert on_ray.execution["workers_ran"] == 2 and "on Ray with 2 worker(s)" in on_ray.summary()
    assert_same_store(tmp_path / "local", tmp_path / "ray", dataset.values("id"))
    assert set(rows_per_sample(tmp_path / "ray").values()) == {1}

    again = usam.embed(
        dataset, store=tmp_path / "ray", checkpoint=tiny_checkpoint, engine="ray", **EMBED
    )
    assert (again.embedded, again.already_done) == (0, 6)


def test_prompts_from_a_field_travel_to_ray_workers(
    local_ray, make_dataset, image_files, tiny_checkpoint, tmp_path
):
    import fiftyone as fo

    dataset = make_dataset(image_files)
    for k, sample in enumerate(dataset.iter_samples(autosave=True)):
        boxes = [[0.1, 0.1, 0.5, 0.5], [0.4, 0.3, 0.5, 0.6]][: 1 + k % 2]
        sample["boxes"] = fo.Detections(detections=[fo.Detection(bounding_box=b) for b in boxes])
    settings = {**EMBED, "checkpoint": tiny_checkpoint, "prompt_field": "boxes"}
    local = usam.embed(dataset, store=tmp_path / "local", **settings)
    on_ray = usam.embed(dataset, store=tmp_path / "ray", engine="ray", workers=2, **settings)
    assert (local.embedded, on_ray.embedded, on_ray.failed) == (6, 6, {})
    mine, theirs = EmbeddingStore.open(tmp_path / "local"), EmbeddingStore.open(tmp_path / "ray")
    assert mine.spec == theirs.spec and mine.spec.prompt_field == "boxes"
    for sample in dataset:
        x, y = mine.get(sample.id), theirs.get(sample.id)
        assert x.prompt_ids == y.prompt_ids == tuple(d.id for d in sample.boxes.detections)
        assert x.prompt_fingerprint == y.prompt_fingerprint != ""
        # one thread on an actor, two here: a float16 token may round the other way
        np.testing.assert_allclose(x.embeddings, y.embeddings, atol=1e-3)
        assert (x.decode_masks() != y.decode_masks()).mean() < 1e-3


def test_a_killed_worker_has_its_block_retried_with_nothing_lost_or_doubled(
    local_ray, make_dataset, many_images, tiny_checkpoint, tmp_path
):
    """Blocks of 6 images in 3 shards (batches of 3, shards of 2): a worker killed mid-block
    has written part of it; the retry skips what is on disk and does the rest."""
    dataset = make_dataset(many_images(18))
    options = {**EMBED, "batch_size": 3, "shard_size": 2}
    killed: list[int] = []

    def kill_one_worker(done, total):
        if killed:
            return
        for pid in worker_pids():
            os.kill(pid, signal.SIGKILL)  # the other worker, or this one on its next block
            killed.append(pid)
            return

    report = usam.embed(
        dataset,
        store=tmp_path / "ray",
        checkpoint=tiny_checkpoint,
        engine="ray",
        workers=2,
        progress=kill_one_worker,
        **options,
    )
    assert killed and report.failed == {}
    assert report.embedded == 18 and report.execution["workers_ran"] >= 2
    assert rows_per_sample(tmp_path / "ray") == {i: 1 for i in dataset.values("id")}
    usam.embed(dataset, store=tmp_path / "local", checkpoint=tiny_checkpoint, **options)
    assert_same_store(tmp_path / "local", tmp_path / "ray", dataset.values("id"))


def worker_pids() -> list[int]:
    """Processes of our Ray actors (their title names the actor class)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
        except OSError:
            continue
        if "TaskActor" in command:
            pids.append(int(entry))
    return pids


DRIVER = textwrap.dedent(
    """
    import sys
    from fiftyone_usam.cli import main
    sys.argv = ["usam", *sys.argv[1:]]
    main()
    """
)


def test_a_killed_driver_rerun_does_only_the_remaining_items(
    local_ray, make_dataset, many_images, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(many_images(12))
    store = tmp_path / "ray"
    command = [
        sys.executable, "-c", DRIVER, "embed", "--dataset", dataset.name, "--store", str(store),
        "--sam", "tiny", "--checkpoint", str(tiny_checkpoint), "--points-per-side", "3",
        "--device", "cpu", "--batch-size", "2", "--shard-size", "2", "--engine", "ray",
        "--workers", "2", "--ray-address", local_ray,
    ]  # fmt: skip
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline and driver.poll() is None:
        if (store / "shards").is_dir() and len(list((store / "shards").glob("*.safetensors"))):
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    output = driver.communicate(timeout=60)[0].decode()
    assert driver.returncode == -signal.SIGKILL, output
    before = len(EmbeddingStore.open(store))
    assert 0 < before < 12
    rerun = usam.embed(
        dataset, store=store, checkpoint=tiny_checkpoint, engine="ray", workers=2, **EMBED
    )
    assert rerun.already_done >= before and rerun.embedded == 12 - rerun.already_done
    assert rows_per_sample(store) == {i: 1 for i in dataset.values("id")}
    usam.embed(dataset, store=tmp_path / "local", checkpoint=tiny_checkpoint, **EMBED)
    assert_same_store(tmp_path / "local", store, dataset.values("id"))


def test_a_store_of_another_spec_is_refused_before_any_worker_starts(
    local_ray, make_dataset, image_files, tiny_checkpoint, tmp_path
):
    dataset = make_dataset(image_files[:2])
    usam.embed(dataset, store=tmp_path / "s", checkpoint=tiny_checkpoint, **EMBED)
    other = {**EMBED, "points_per_side": 2}
    with pytest.raises(StoreError, match="points_per_side: store has 3, asked for 2"):
        usam.embed(dataset, store=tmp_path / "s", checkpoint=tiny_checkpoint, engine="ray", **other)
    assert len(rows_per_sample(tmp_path / "s")) == 2  # nothing was added


def test_a_sam_built_in_memory_cannot_travel(local_ray, make_dataset, image_files, tiny_sam):
    dataset = make_dataset(image_files[:1])
    with pytest.raises(ConfigError, match="a SAM built in memory cannot travel"):
        usam.embed(dataset, sam=tiny_sam, points_per_side=2, device="cpu", engine="ray")


def test_a_bad_address_says_what_to_do(make_dataset, image_files, tiny_checkpoint, tmp_path):
    dataset = make_dataset(image_files[:1])
    command = [
        sys.executable, "-c", DRIVER, "embed", "--dataset", dataset.name,
        "--store", str(tmp_path / "s"), "--sam", "tiny", "--checkpoint", str(tiny_checkpoint),
        "--points-per-side", "2", "--device", "cpu", "--engine", "ray",
        "--ray-address", "127.0.0.1:9",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "cannot start or join the Ray cluster at '127.0.0.1:9'" in result.stderr
    assert "--ray-address" in result.stderr


def test_without_ray_installed_the_error_says_how_to_install_it():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if it were not installed
        from fiftyone_usam.execution.ray import import_ray
        try:
            import_ray()
        except Exception as e:
            print(type(e).__name__, e)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.startswith("ConfigError")
    assert 'pip install "fiftyone-usam[ray]"' in result.stdout


def test_predict_embeds_what_the_store_lacks_on_ray_and_labels_the_same(
    local_ray, make_dataset, image_files, tiny_head, tiny_checkpoint, tmp_path
):
    from tests.integration.test_predict import KEEP_ALL, assert_same_labels, labels_of

    local, remote = make_dataset(image_files), make_dataset(image_files)
    options = {"head": tiny_head, "checkpoint": tiny_checkpoint, **KEEP_ALL}
    a = usam.predict(local, store=tmp_path / "local", **options)
    b = usam.predict(
        remote, store=tmp_path / "ray", engine="ray", workers=2, shard_size=2, **options
    )
    assert a.used_sam and b.used_sam and a.labelled == b.labelled == 6

    def by_path(dataset, values):
        return dict(zip(dataset.values("filepath"), values, strict=True))

    ids = [by_path(d, d.values("id")) for d in (local, remote)]
    stores = EmbeddingStore.open(tmp_path / "local"), EmbeddingStore.open(tmp_path / "ray")
    for path in ids[0]:
        x, y = stores[0].get(ids[0][path]), stores[1].get(ids[1][path])
        np.testing.assert_array_equal(x.embeddings, y.embeddings)
        assert x.mask_rles == y.mask_rles
    labels = [by_path(d, labels_of(d).values()) for d in (local, remote)]
    assert_same_labels(*labels)


def test_a_worker_that_cannot_write_the_store_fails_at_start(tiny_checkpoint, tmp_path):
    """The storage rule, checked by the worker itself: here its shards folder is a file, which
    no user (root included) can write into."""
    task = embed_task(tiny_checkpoint, tmp_path / "store")
    shards = tmp_path / "store" / "shards"
    if shards.exists():
        shutil.rmtree(shards)
    shards.write_text("not a folder")
    with pytest.raises(StoreError, match="storage every node sees"):
        task.start()


def test_a_worker_that_cannot_see_an_image_the_driver_saw_fails_the_run(tiny_checkpoint, tmp_path):
    worker = embed_task(tiny_checkpoint, tmp_path / "store").start()
    item = {"key": "a", "filepath": str(tmp_path / "gone.png"), "replace": False, "seen": True}
    with pytest.raises(ConfigError, match=r"cannot see .*gone\.png.*every node sees"):
        list(worker.run([item]))
    unseen = {**item, "seen": False}  # missing for the driver too: that sample's own failure
    (outcome,) = worker.run([unseen])
    assert outcome.key == "a" and "gone.png" in outcome.error


def embed_task(checkpoint, store):
    from fiftyone_usam.embeddings.extractor import spec_for
    from fiftyone_usam.embeddings.sam_backend import load_sam
    from fiftyone_usam.execution.embedding import EmbedTask

    loaded = load_sam(None, checkpoint, device="cpu")
    spec = spec_for(loaded, 2)
    EmbeddingStore.create(store, spec)
    settings = {"points_per_side": 2, "batch_size": 1}
    return EmbedTask(str(store), spec, settings, loaded.variant_config, str(checkpoint), "cpu")


def test_a_two_node_cluster_fills_the_same_store(
    make_dataset, image_files, tiny_checkpoint, tmp_path
):
    """``ray.cluster_utils.Cluster``: a head without CPUs and two one-CPU nodes stand for a
    cluster; a CLI driver joins it by address. Runs after the module's local Ray is stopped."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        dataset = make_dataset(image_files)
        command = [
            sys.executable, "-c", DRIVER, "embed", "--dataset", dataset.name,
            "--store", str(tmp_path / "cluster"), "--sam", "tiny",
            "--checkpoint", str(tiny_checkpoint), "--points-per-side", "3", "--device", "cpu",
            "--batch-size", "2", "--shard-size", "2", "--engine", "ray", "--workers", "2",
            "--ray-address", cluster.address,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "6 embedded" in result.stdout and "on Ray with 2 worker(s)" in result.stdout
    finally:
        cluster.shutdown()
    usam.embed(dataset, store=tmp_path / "local", checkpoint=tiny_checkpoint, **EMBED)
    assert_same_store(tmp_path / "local", tmp_path / "cluster", dataset.values("id"))


def test_a_worker_error_reaches_the_driver_as_itself(local_ray, tiny_checkpoint, tmp_path):
    """Through Ray: the storage rule's message, not Ray's wrapper around it."""
    from fiftyone_usam.execution.ray import run_on_ray
    from fiftyone_usam.execution.work import ExecutionConfig

    task = embed_task(tiny_checkpoint, tmp_path / "store").remote()
    item = {"key": "a", "filepath": str(tmp_path / "gone.png"), "replace": False, "seen": True}
    with pytest.raises(ConfigError, match=r"cannot see .*gone\.png.*every node sees"):
        list(run_on_ray(task, [item], ExecutionConfig("ray")))
