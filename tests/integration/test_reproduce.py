"""training/reproduce.py runs the smoke recipe end to end and prints the results table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce", REPO / "training" / "reproduce.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_recipe_prints_the_table(tmp_path, torch_single_thread):
    import fiftyone as fo

    script = load_script()
    recipe = REPO / "training" / "recipes" / "smoke.yaml"
    name = script.load_recipe(recipe)["benchmark"]["dataset"]
    try:
        result = CliRunner().invoke(script.main, [str(recipe), "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        assert "| method | mIoU paper | mIoU ours |" in result.output
        assert "| U-SAM |" in result.output and "| Otsu |" in result.output
        data = json.loads((tmp_path / "results.json").read_text())
        assert set(data["ours"]) == {"U-SAM", "Otsu"}
        assert data["ours"]["U-SAM"]["mIoU"] is not None
        assert data["ours"]["Otsu"]["foreground IoU"] is not None
        assert {"usam_eval", "otsu_eval"} <= set(fo.load_dataset(name).list_evaluations())
    finally:
        for leftover in (name, f"{name}-usam-synthetic"):
            if fo.dataset_exists(leftover):
                fo.delete_dataset(leftover)


def test_every_recipe_is_valid():
    script = load_script()
    recipes = sorted((REPO / "training" / "recipes").glob("*.yaml"))
    names = {p.stem for p in recipes}
    assert {
        "voc-synthetic",
        "voc-crawled",
        "voc-superclasses",
        "coco-synthetic",
        "coco-crawled",
        "smoke",
    } <= names
    for path in recipes:
        recipe = script.load_recipe(path)
        assert recipe["name"] == path.stem
        assert recipe["benchmark"]["kind"] in ("voc", "coco", "scenes")


def test_a_typo_in_a_recipe_is_an_error(tmp_path):
    import click

    script = load_script()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbenchmark: {kind: voc}\nclasses: voc\nepoch: 3\n")
    with pytest.raises(click.UsageError, match="epoch"):
        script.load_recipe(bad)
