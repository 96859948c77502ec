"""Reproduce a row of the U-SAM paper's tables from a recipe, and print ours beside theirs.

    python training/reproduce.py training/recipes/voc-synthetic.yaml --out results/voc-synthetic

A recipe (see ``training/recipes/``) names the benchmark (PASCAL VOC or COCO, from files you
have), the classes, how training images are made, the SAM and the baselines. The script imports
the benchmark, runs `fiftyone_usam.run` on it (generate|crawl -> embed -> train -> predict ->
evaluate; resumable), runs the baselines into their own fields, evaluates them the same way,
and writes ``results.json`` and ``results.md``. Real recipes need the real weights and a GPU;
``smoke.yaml`` runs on tiny random models in a minute (and in the tests).

Only the public API of ``fiftyone_usam`` is used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
import yaml

import fiftyone_usam as usam

FIELDS = {"U-SAM": "usam", "SAM+CLIP": "sam_clip", "Otsu": "otsu"}
METHODS = {"sam-clip": "SAM+CLIP", "otsu": "Otsu"}
KNOWN_KEYS = {
    "name", "benchmark", "classes", "superclasses", "source", "per_class", "crawl_engine",
    "urls_file", "sam", "checkpoint", "model", "steps", "points_per_side", "epochs", "seed",
    "threshold",
    "device", "tiny", "baselines", "clip_model", "paper",
}  # fmt: skip


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Reads a recipe and checks its keys (a typo is an error, not a silent default)."""
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(recipe) - KNOWN_KEYS
    if unknown:
        raise click.UsageError(f"{path}: unknown recipe keys {sorted(unknown)}")
    for key in ("name", "benchmark", "classes"):
        if key not in recipe:
            raise click.UsageError(f"{path}: the recipe needs `{key}`")
    return recipe


def prepare_benchmark(recipe: dict[str, Any], workdir: Path, seed: int) -> tuple[str, Any]:
    """Imports (or reuses) the benchmark dataset; returns its name and the recipe's classes."""
    bench = recipe["benchmark"]
    kind, name = bench["kind"], bench["dataset"]
    if kind == "voc":
        usam.import_voc(
            Path(bench["root"]).expanduser(),
            dataset=name,
            split=bench.get("split", "val"),
            max_samples=bench.get("max_samples"),
        )
    elif kind == "coco":
        usam.import_coco(
            Path(bench["images_dir"]).expanduser(),
            Path(bench["annotations"]).expanduser(),
            dataset=name,
            max_samples=bench.get("max_samples"),
        )
    elif kind == "scenes":
        from fiftyone_usam.testing.scenes import scenes_dataset

        scenes_dataset(name, workdir / "scenes", int(bench.get("images", 8)), seed)
    else:
        raise click.UsageError(f"benchmark kind must be voc, coco or scenes, not {kind!r}")
    classes = recipe["classes"]
    if classes in ("voc", "voc-superclasses"):
        classes = usam.voc_ontology(superclasses=classes == "voc-superclasses")
    elif classes == "coco":
        classes = usam.coco_ontology()
    return name, classes


def reproduce(recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    """Runs the recipe end to end; returns the results table's data."""
    seed = int(recipe.get("seed", 0))
    out.mkdir(parents=True, exist_ok=True)
    dataset, classes = prepare_benchmark(recipe, out, seed)
    options: dict[str, Any] = {
        key: recipe[key]
        for key in ("source", "per_class", "crawl_engine", "urls_file", "sam", "checkpoint",
                    "model", "steps", "points_per_side", "epochs", "threshold", "device",
                    "superclasses")
        if recipe.get(key) is not None
    }  # fmt: skip
    if recipe.get("tiny"):
        from fiftyone_usam.testing.pipelines import save_random_pipeline
        from fiftyone_usam.testing.sam import save_tiny_sam

        options["checkpoint"] = save_tiny_sam(
            out / "models" / "sam", "demo_sam", seed=seed, name="demo-tiny"
        )
        options["model"] = save_random_pipeline(out / "models" / "diffusion", seed)
    report = usam.run(
        classes,
        dataset=dataset,
        workdir=out / "work",
        gt_field="ground_truth",
        seed=seed,
        progress=True,
        **options,
    )
    rows = {"U-SAM": report.evaluation}
    for method in recipe.get("baselines") or []:
        label = METHODS[method]
        field = FIELDS[label]
        baseline_options = {"device": options.get("device")}
        if method == "sam-clip":
            baseline_options.update(
                classes=classes,
                checkpoint=options.get("checkpoint"),
                sam=options.get("sam"),
                store=report.stores.get(dataset),
                clip_model=recipe.get("clip_model", "openai/clip-vit-base-patch32"),
            )
        usam.baseline(dataset, method=method, field=field, progress=True, **baseline_options)
        rows[label] = usam.evaluate(
            dataset,
            pred_field=field,
            gt_field="ground_truth",
            report=out / f"evaluation-{field}",
            overwrite=True,
            groups=classes if recipe.get("superclasses") else None,
        )
    return {
        "recipe": recipe["name"],
        "dataset": dataset,
        "paper": recipe.get("paper") or {},
        "ours": {
            label: {
                "mIoU": _pct(ev.mean_iou),
                "mAP50": _pct(ev.map50),
                "foreground IoU": _pct(ev.foreground_iou),
                "boundary F": _pct(ev.boundary.get("f1")),
            }
            for label, ev in rows.items()
            if ev is not None
        },
    }


def table(results: dict[str, Any]) -> str:
    """The paper's rows next to ours, as markdown."""
    lines = [
        f"Recipe `{results['recipe']}` on `{results['dataset']}` (percent)",
        "",
        "| method | mIoU paper | mIoU ours | mAP50 paper | mAP50 ours | fg IoU ours | "
        "boundary F ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, ours in results["ours"].items():
        paper = results["paper"].get(label, {})
        lines.append(
            f"| {label} | {_fmt(paper.get('mIoU'))} | {_fmt(ours['mIoU'])} | "
            f"{_fmt(paper.get('mAP50'))} | {_fmt(ours['mAP50'])} | "
            f"{_fmt(ours['foreground IoU'])} | {_fmt(ours['boundary F'])} |"
        )
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(100 * value, 2)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@click.command()
@click.argument("recipe", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the run's artifacts, results.json and results.md go.",
)
def main(recipe: Path, out: Path) -> None:
    """Run RECIPE end to end and print the paper's table rows next to ours."""
    results = reproduce(load_recipe(recipe), out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "results.md").write_text(text)
    click.echo(text)


if __name__ == "__main__":
    main()
