"""Hostile input, one test (at least) per defect found by the reliability sweep.

Each test reproduces a defect seen on an earlier main with the tiny models and checks that the
run now fails clearly (or skips only what is bad) and that nothing already written is lost.
Keep new cases here, so the list can grow.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore
from fiftyone_usam.errors import StoreError

KEEP_ALL = {"threshold": 0.0, "device": "cpu"}


def damage(shard: Path, array: str = "rle_bytes") -> None:
    """Overwrites bytes in the middle of one array's data in a safetensors file."""
    data = bytearray(shard.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    start, end = json.loads(data[8 : 8 + length])[array]["data_offsets"]
    base = 8 + length
    middle = base + (start + end) // 2
    data[middle : middle + 8] = b"\xff\x00\x7f\x01\xff\x00\x7f\x01"
    shard.write_bytes(bytes(data))


@pytest.fixture
def embedded(make_dataset, image_files, tiny_checkpoint, tmp_path):
    dataset = make_dataset(image_files)
    report = usam.embed(
        dataset, store=tmp_path / "store", checkpoint=tiny_checkpoint, points_per_side=2,
        device="cpu", progress=False,
    )  # fmt: skip
    return dataset, report.store


# -- 1. a damaged shard is reported by name, never decoded -----------------------------------


def test_a_damaged_shard_is_named_and_never_decoded(embedded):
    dataset, store_path = embedded
    shard = sorted((store_path / "shards").glob("*.safetensors"))[0]
    damage(shard)
    store = EmbeddingStore.open(store_path)
    first = next(iter(store.sample_ids() & set(dataset.values("id"))))
    with pytest.raises(StoreError, match=rf"shard {shard}.*damaged.*usam embed --store"):
        store.get(first)
    with pytest.raises(StoreError, match="damaged"):
        store.load_embeddings(sorted(store.sample_ids()))
