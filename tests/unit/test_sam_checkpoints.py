import hashlib
import http.server
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from fiftyone_usam.embeddings import sam_checkpoints
from fiftyone_usam.embeddings.sam_checkpoints import file_sha256, resolve_checkpoint
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS
from fiftyone_usam.errors import CheckpointError

PAYLOAD = b"pretend these are SAM weights" * 1000


@pytest.fixture
def served(tmp_path):
    """A local HTTP server with one file; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "weights.pth").write_bytes(PAYLOAD)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _variant(url, sha=PAYLOAD_SHA):
    return replace(
        OFFICIAL_VARIANTS["vit_b"],
        name="vit_b_test",
        checkpoint_url=url,
        checkpoint_filename="weights.pth",
        checkpoint_sha256=sha,
    )


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    monkeypatch.setattr(sam_checkpoints, "model_zoo_dir", lambda: zoo)
    return zoo


def test_explicit_checkpoint_must_exist(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*missing.pth. Check the --checkpoint"):
        resolve_checkpoint(OFFICIAL_VARIANTS["vit_b"], tmp_path / "missing.pth")


def test_found_in_cache_then_zoo(tmp_path, zoo_dir, served):
    variant = _variant(served + "weights.pth")
    (zoo_dir / "weights.pth").write_bytes(PAYLOAD)
    assert (
        resolve_checkpoint(variant, cache_dir=tmp_path / "cache", download=False)
        == zoo_dir / "weights.pth"
    )
    (tmp_path / "cache" / "sam").mkdir(parents=True)
    (tmp_path / "cache" / "sam" / "weights.pth").write_bytes(PAYLOAD)
    found = resolve_checkpoint(variant, cache_dir=tmp_path / "cache", download=False)
    assert found == tmp_path / "cache" / "sam" / "weights.pth"


def test_download_verifies_checksum_and_lands_in_cache(tmp_path, zoo_dir, served, capsys):
    variant = _variant(served + "weights.pth")
    path = resolve_checkpoint(variant, cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "sam" / "weights.pth"
    assert path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob("*.part"))
    assert "weights.pth" in capsys.readouterr().err  # the progress bar


def test_download_with_wrong_checksum_keeps_nothing(tmp_path, zoo_dir, served):
    variant = _variant(served + "weights.pth", sha="0" * 64)
    with pytest.raises(CheckpointError, match=r"SHA-256 is .* not 0000"):
        resolve_checkpoint(variant, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache" / "sam").iterdir())


def test_corrupt_local_copy_is_refused(tmp_path, zoo_dir, served):
    variant = _variant(served + "weights.pth")
    (zoo_dir / "weights.pth").write_bytes(PAYLOAD[:100])
    with pytest.raises(CheckpointError, match=r"incomplete download. Delete it"):
        resolve_checkpoint(variant, cache_dir=tmp_path / "cache", download=False)


def test_offline_error_says_which_file_to_put_where(tmp_path, zoo_dir):
    with socket_closed_port() as port:
        variant = replace(
            OFFICIAL_VARIANTS["vit_b"],
            checkpoint_url=f"http://127.0.0.1:{port}/sam_vit_b_01ec64.pth",
        )
        with pytest.raises(CheckpointError) as info:
            resolve_checkpoint(variant, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "download failed" in message
    assert f"save it as {tmp_path / 'cache' / 'sam' / 'sam_vit_b_01ec64.pth'}" in message
    assert str(zoo_dir / "sam_vit_b_01ec64.pth") in message
    assert "375 MB" in message and OFFICIAL_VARIANTS["vit_b"].checkpoint_sha256 in message
    assert "--checkpoint PATH" in message


def test_downloads_can_be_turned_off(tmp_path, zoo_dir):
    with pytest.raises(CheckpointError, match=r"downloads are turned off"):
        resolve_checkpoint(OFFICIAL_VARIANTS["vit_h"], cache_dir=tmp_path, download=False)


def test_custom_variant_without_checkpoint_is_an_error(tiny_variant):
    with pytest.raises(CheckpointError, match=r"no official checkpoint.*--checkpoint PATH"):
        resolve_checkpoint(tiny_variant)


def test_file_hash_is_remembered_per_path_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    expected, expected_after = (hashlib.sha256(b).hexdigest() for b in (b"abc", b"abcd"))
    assert file_sha256(path) == expected
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(sam_checkpoints.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert file_sha256(path) == expected
    assert calls == []  # answered from the cache
    path.write_bytes(b"abcd")
    assert file_sha256(path) == expected_after
    assert calls == [1]


class socket_closed_port:
    """A port on 127.0.0.1 that nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("USAM_CACHE_DIR", str(tmp_path / "x"))
    assert sam_checkpoints.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("USAM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sam_checkpoints.default_cache_dir() == Path(tmp_path / "xdg" / "fiftyone-usam")
