"""Our file names and atomic writes."""

import os
import time

import pytest
from PIL import Image

from fiftyone_usam.files import (
    atomic_dir,
    atomic_path,
    remove_stale_temp_files,
    save_image_atomic,
    temp_path,
    write_bytes_atomic,
)
from fiftyone_usam.sources.naming import slug


def test_slugs_are_ascii_folder_names():
    assert slug("Potted Plant") == "potted-plant"
    assert slug("  café / crème ") == "cafe-creme"
    assert slug("../../etc") == "etc"
    assert slug("猫").startswith("class-") and slug("猫") != slug("犬")
    assert len(slug("x" * 500)) <= 60


def test_atomic_writes_leave_only_the_file(tmp_path):
    target = tmp_path / "dog" / "a.jpg"
    write_bytes_atomic(target, b"abc")
    write_bytes_atomic(target, b"abcd")
    assert target.read_bytes() == b"abcd"
    save_image_atomic(tmp_path / "dog" / "b.png", Image.new("RGB", (4, 4)))
    assert sorted(p.name for p in (tmp_path / "dog").iterdir()) == ["a.jpg", "b.png"]


def test_stale_temporary_files_are_removed_fresh_ones_kept(tmp_path):
    folder = tmp_path / "dog"
    folder.mkdir()
    old = folder / ".a.png.usam-tmp-1-abc"
    new = folder / ".b.png.usam-tmp-2-def"
    keep = folder / "c.png"
    for path in (old, new, keep):
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert remove_stale_temp_files(tmp_path) == 1
    assert not old.exists() and new.exists() and keep.exists()
    assert remove_stale_temp_files(tmp_path / "missing") == 0


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "spec.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.json"]


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "head"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]


def test_temporary_files_of_gone_writers_are_removed_live_ones_kept(tmp_path):
    live = temp_path(tmp_path / "a.safetensors")  # this process
    gone = tmp_path / ".b.safetensors.usam-tmp-999999999-deadbeef"  # no such process
    for path in (live, gone):
        path.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path, pattern="", owner_gone=True) == 1
    assert live.exists() and not gone.exists()
