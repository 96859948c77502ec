"""An evaluation's figures, and the report files made of them: JSON, a markdown table, plots."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fiftyone_usam.files import write_bytes_atomic


@dataclass
class EvaluationReport:
    """What `evaluate` measured on a view.

    Fractions are in [0, 1]; None where a figure does not apply (e.g. no instance ground truth
    for mAP50) or is undefined.

    Attributes:
        dataset: the dataset's name.
        eval_key: FiftyOne's key of the semantic evaluation run.
        det_eval_key: FiftyOne's key of the instance evaluation run, if one ran.
        pred_field: the predicted semantic field (or instances rendered into one).
        gt_field: the ground-truth field.
        classes: the aligned classes (0 = background) the confusion matrix is indexed by.
        samples: samples counted.
        skipped: sample id -> why it was not counted (a missing mask, ...).
        mean_iou: mIoU over the classes present, background included (PASCAL VOC).
        mean_iou_objects: mIoU without background.
        foreground_iou: IoU of "any object" vs background (class-agnostic).
        pixel_accuracy: fraction of counted pixels labelled right.
        per_class_iou: class -> IoU (None: absent from ground truth and prediction).
        boundary: boundary precision / recall / F at ``boundary_tolerance`` pixels.
        map50: COCO-style mask mAP at IoU ``iou``, by FiftyOne's evaluate_detections.
        per_class_ap: class -> AP at ``iou`` (None: no ground truth of that class).
        confusion_matrix: `(C, C)` pixel counts, rows = ground truth.
        notes: things a reader should know (classes only one side has, ignored pixels, ...).
        report_dir: where the report files were written.
    """

    dataset: str
    eval_key: str
    pred_field: str
    gt_field: str
    classes: list[str]
    samples: int
    mean_iou: float | None
    mean_iou_objects: float | None
    foreground_iou: float | None
    pixel_accuracy: float | None
    per_class_iou: dict[str, float | None]
    boundary: dict[str, float | None]
    confusion_matrix: list[list[int]]
    det_eval_key: str | None = None
    map50: float | None = None
    iou: float = 0.5
    per_class_ap: dict[str, float | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    report_dir: str | None = None

    def summary(self) -> str:
        """One line for people: mIoU and mAP50 in percent, as the paper reports them."""
        parts = [f"mIoU {_pct(self.mean_iou)}"]
        if self.map50 is not None or self.det_eval_key:
            parts.append(f"mAP{round(self.iou * 100)} {_pct(self.map50)}")
        parts.append(f"boundary F {_pct(self.boundary.get('f1'))}")
        parts.append(f"foreground IoU {_pct(self.foreground_iou)}")
        return f"{', '.join(parts)} on {self.samples} samples of {self.dataset!r}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN written as null)."""
        return _json_ready(asdict(self))

    def markdown(self) -> str:
        """A markdown report: the headline figures and a per-class table."""
        lines = [
            f"# U-SAM evaluation: `{self.pred_field}` vs `{self.gt_field}` ({self.dataset})",
            "",
            "| metric | value |",
            "|---|---|",
            f"| mIoU (background included) | {_pct(self.mean_iou)} |",
            f"| mIoU (objects only) | {_pct(self.mean_iou_objects)} |",
            f"| mAP{round(self.iou * 100)} (masks) | {_pct(self.map50)} |",
            f"| foreground IoU | {_pct(self.foreground_iou)} |",
            f"| pixel accuracy | {_pct(self.pixel_accuracy)} |",
            f"| boundary F (precision / recall) | {_pct(self.boundary.get('f1'))} "
            f"({_pct(self.boundary.get('precision'))} / {_pct(self.boundary.get('recall'))}) |",
            f"| samples | {self.samples} |",
            "",
            f"FiftyOne evaluation runs: `{self.eval_key}`"
            + (f", `{self.det_eval_key}`" if self.det_eval_key else ""),
            "",
            "| class | IoU | AP |",
            "|---|---|---|",
        ]
        for name in self.classes:
            lines.append(
                f"| {name} | {_pct(self.per_class_iou.get(name))} | "
                f"{_pct(self.per_class_ap.get(name))} |"
            )
        if self.notes:
            lines += ["", "Notes:", *(f"- {note}" for note in self.notes)]
        if self.skipped:
            lines += ["", f"{len(self.skipped)} samples skipped (see report.json)."]
        return "\n".join(lines) + "\n"


def write_report(report: EvaluationReport, directory: str | Path) -> Path:
    """Writes ``report.json``, ``report.md``, ``per_class_iou.png`` and ``confusion_matrix.png``.

    Each file is written to a temporary name and renamed, so a crash leaves no half file.

    Returns:
        The directory.
    """
    out = Path(directory).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    report.report_dir = str(out.resolve())
    write_bytes_atomic(
        out / "report.json", (json.dumps(report.to_dict(), indent=2) + "\n").encode()
    )
    write_bytes_atomic(out / "report.md", report.markdown().encode())
    _plot_per_class_iou(report, out / "per_class_iou.png")
    _plot_confusion(report, out / "confusion_matrix.png")
    return out


def _plot_per_class_iou(report: EvaluationReport, path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(report.per_class_iou)
    values = [v if v is not None else 0.0 for v in report.per_class_iou.values()]
    fig = Figure(figsize=(max(4.0, 0.35 * len(names) + 1.5), 3.5), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), [100 * v for v in values], color="#4c72b0")
    for bar, raw in zip(bars, report.per_class_iou.values(), strict=True):
        if raw is None:
            bar.set_hatch("//")
            bar.set_alpha(0.3)
    if report.mean_iou is not None:
        ax.axhline(100 * report.mean_iou, color="#dd8452", linestyle="--", label="mIoU")
        ax.legend(loc="upper right")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Per-class IoU: {report.pred_field}")
    _save_figure(fig, path)


def _plot_confusion(report: EvaluationReport, path: Path) -> None:
    from matplotlib.figure import Figure

    cm = np.asarray(report.confusion_matrix, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(report.classes)
    side = max(4.0, 0.3 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="fraction of the true class's pixels")
    ax.set_xticks(range(n), report.classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), report.classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Pixel confusion matrix (row-normalised)")
    _save_figure(fig, path)


def _save_figure(fig: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_bytes_atomic(path, buffer.getvalue())


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}"


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value
