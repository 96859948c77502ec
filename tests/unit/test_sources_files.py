"""Our file names and atomic writes."""

import os
import time

from PIL import Image

from fiftyone_usam.sources.files import (
    remove_stale_temp_files,
    save_image_atomic,
    slug,
    write_bytes_atomic,
)


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
