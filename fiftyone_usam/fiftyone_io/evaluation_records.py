"""The record of U-SAM's evaluations on a dataset (``dataset.info["usam_evaluations"]``):
which keys and derived fields are ours, claimed before anything is written, then marked done
or failed, so a crashed or failed evaluation is never taken for a running one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.evaluation.report import EvaluationReport
from fiftyone_usam.fiftyone_io.datasets import record_entry
from fiftyone_usam.fiftyone_io.writer import FieldExistsError

if TYPE_CHECKING:
    import fiftyone as fo

EVALUATIONS_KEY = "usam_evaluations"


def existing_evaluation(dataset: fo.Dataset, key: str, det_key: str, overwrite: bool) -> str | None:
    """What is wrong with evaluating under ``key`` (it exists and no ``overwrite``), or None;
    reads only, so the App's form can ask as it is filled in."""
    existing = [k for k in (key, det_key) if k in dataset.list_evaluations()]
    if existing and not overwrite:
        return (
            f"dataset {dataset.name!r} already has the evaluation {existing[0]!r}: redo it "
            "(--overwrite; in the App, Redo an existing evaluation), or choose another "
            "evaluation key"
        )
    return None


def check_key(dataset: fo.Dataset, key: str, det_key: str, overwrite: bool) -> None:
    """Refuses an existing evaluation unless ``overwrite`` (then deletes it and the fields it
    wrote); refuses to touch a field with one of our derived names that another wrote.

    Raises:
        ConfigError: ``key`` is not an identifier.
        FieldExistsError: the evaluation exists and no ``overwrite``, or a field is not ours.
    """
    if not key.isidentifier():
        raise ConfigError(f"invalid eval_key {key!r}: use letters, digits and underscores")
    problem = existing_evaluation(dataset, key, det_key, overwrite)
    if problem:
        raise FieldExistsError(problem)
    existing = [k for k in (key, det_key) if k in dataset.list_evaluations()]
    entries = dataset.info.get(EVALUATIONS_KEY, [])
    entry: dict[str, Any] = next((e for e in entries if e.get("eval_key") == key), {})
    ours = set(entry.get("derived_fields", []))
    taken = [n for n in derived_names(key) if dataset.has_field(n) and n not in ours]
    if taken:
        raise FieldExistsError(
            f"the field {taken[0]!r} is not from a U-SAM evaluation {key!r}, and the "
            "evaluation would write it: choose another --eval-key"
        )
    for k in existing:
        dataset.delete_evaluation(k)
    for name in ours:
        if dataset.has_field(name):
            dataset.delete_sample_field(name)
        dataset.mask_targets.pop(name, None)
    dataset.save()


def claim_fields(dataset: fo.Dataset, key: str) -> None:
    """Records the evaluation as running, with every field it may write, before writing them,
    so that a crash leaves them known as its own."""
    record_entry(
        dataset,
        EVALUATIONS_KEY,
        {"eval_key": key, "state": "running", "derived_fields": list(derived_names(key))},
        match="eval_key",
    )


def record_failed(dataset: fo.Dataset, key: str, error: str) -> None:
    """Marks a claimed evaluation as failed (with why), so it is never taken for one running."""
    record_entry(
        dataset,
        EVALUATIONS_KEY,
        {
            "eval_key": key,
            "state": "failed",
            "error": error[:500],
            "derived_fields": [n for n in derived_names(key) if dataset.has_field(n)],
        },
        match="eval_key",
    )


def record_done(dataset: fo.Dataset, report: EvaluationReport) -> None:
    """Records the finished evaluation's figures and the derived fields it wrote."""
    key = report.eval_key
    record_entry(
        dataset,
        EVALUATIONS_KEY,
        {
            "eval_key": key,
            "det_eval_key": report.det_eval_key,
            "pred_field": report.pred_field,
            "gt_field": report.gt_field,
            "mean_iou": report.mean_iou,
            "map50": report.map50,
            "boundary_f1": report.boundary["f1"],
            "foreground_iou": report.foreground_iou,
            "samples": report.samples,
            "report_dir": report.report_dir,
            "derived_fields": [n for n in derived_names(key) if dataset.has_field(n)],
            "state": "done",
        },
        match="eval_key",
    )


def derived_names(key: str) -> tuple[str, ...]:
    """The fields an evaluation may write besides FiftyOne's own."""
    return (f"{key}_gt", f"{key}_pred", f"{key}_gt_instances")
