"""`demo`: the whole chain offline on the CPU in minutes, with tiny random models.

It builds a tiny SAM and a tiny Stable Diffusion pipeline with *random weights* (no download),
a small dataset of simple scenes (discs and squares on noise, with semantic and instance ground
truth), and runs `fiftyone_usam.stages.pipeline.run` on it: generate -> embed -> train -> predict ->
evaluate. Every stage is real; the masks and metrics are NOT meaningful, because the models
have learned nothing. It exists so a newcomer can see every stage work before downloading
gigabytes of weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.fiftyone_io.datasets import usam_dir
from fiftyone_usam.stages.pipeline import run
from fiftyone_usam.testing.pipelines import save_random_pipeline
from fiftyone_usam.testing.sam import save_tiny_sam
from fiftyone_usam.testing.scenes import CLASSES, scenes_dataset

if TYPE_CHECKING:
    from fiftyone_usam.stages.pipeline import PipelineReport, StageProgress

WARNING = (
    "The demo's SAM and Stable Diffusion have random weights: its masks and metrics are NOT "
    "meaningful. It shows every stage working; for real labels, run `usam run` with the real "
    "weights (see the README)."
)


def demo(
    *,
    dataset: str = "usam-demo",
    workdir: str | Path | None = None,
    images: int = 12,
    per_class: int = 6,
    epochs: int = 10,
    seed: int = 0,
    progress: bool | StageProgress | None = None,
) -> PipelineReport:
    """Builds the tiny models and a scenes dataset, then runs the whole chain on the CPU.

    Re-running resumes (finished stages are skipped), like `run`.

    Args:
        dataset: name of the scenes dataset to create and label (persistent).
        workdir: where the tiny models, heads and the report go; default
            ``<FiftyOne dataset dir>/usam/<dataset>/demo``.
        images: scenes in the dataset.
        per_class: generated training images per class.
        epochs: head training epochs per stage.
        seed: seed of the models, the scenes and the run.
        progress: True for bars, False for none, or ``callback(stage, done, total)``.

    Raises:
        ConfigError: ``dataset`` exists and was not made by the demo.
    """

    if images < 1 or per_class < 2:
        raise ConfigError("the demo needs images >= 1 and per_class >= 2")
    out = Path(workdir).expanduser() if workdir else _default_workdir(dataset)
    checkpoint = save_tiny_sam(out / "sam", "demo_sam", seed=seed, name="demo-tiny")
    pipeline = save_random_pipeline(out / "diffusion", seed)
    scenes = scenes_dataset(dataset, out / "scenes", images, seed)
    return run(
        ",".join(CLASSES),
        dataset=scenes.name,
        source="synthetic",
        per_class=per_class,
        checkpoint=checkpoint,
        workdir=out,
        gt_field="ground_truth",
        model=pipeline,
        steps=10,
        points_per_side=6,
        epochs=epochs,
        seed=seed,
        threshold=0.0,  # a random model is never confident: keep its masks, to have some to see
        device="cpu",
        progress=progress,
    )


def _default_workdir(dataset_name: str) -> Path:
    return usam_dir(dataset_name) / "demo"
