"""Panel: review U-SAM's labels in the App's grid (the run, classes, confidences, evaluation and
corrections), open the views a reviewer works through, and start learning from the corrections.

Thin: every figure comes from `fiftyone_usam.fiftyone_io.review`; the panel keeps the summary
in its state and draws it.
"""

import itertools

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.errors import USAMError
from fiftyone_usam.fiftyone_io.review import (
    ALL_CLASSES,
    class_view,
    review_summary,
    uncertain_first,
    usam_fields,
)

REFINE_URI = "@fiftyone-usam/usam/refine"


class USAMPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="usam_panel",
            label="U-SAM",
            surfaces="grid",
            icon="auto_awesome",
            help_markdown=(
                "Review U-SAM's labels: the run, instances per class, confidences, the "
                "evaluation and your corrections (tag instances `usam:wrong` / `usam:ok` or "
                "edit their label in the App)."
            ),
        )

    def on_load(self, ctx):
        fields = usam_fields(ctx.dataset) if ctx.dataset is not None else []
        field = ctx.panel.state.field
        self._show(ctx, fields, field if field in fields else next(iter(fields), None))

    def on_change_dataset(self, ctx):
        ctx.panel.state.clear()
        self.on_load(ctx)

    def refresh(self, ctx):
        """Reads the dataset again: corrections made in the App since the panel loaded."""
        self.on_load(ctx)

    def on_change_field(self, ctx):
        fields = usam_fields(ctx.dataset)
        field = ctx.params.get("value") or ctx.panel.state.field
        self._show(ctx, fields, field if field in fields else next(iter(fields), None))

    def review_uncertain(self, ctx):
        field = ctx.panel.state.field
        ctx.ops.set_view(view=uncertain_first(ctx.dataset.view(), field))
        ctx.ops.notify(f"Most uncertain first by {field}_uncertainty", variant="info")

    def review_class(self, ctx):
        state = ctx.panel.state
        low = _number(state.confidence_low, 0.0)
        high = _number(state.confidence_high, 1.0)
        try:
            view = class_view(ctx.dataset.view(), state.field, state.review_label, low, high)
        except USAMError as e:
            ctx.ops.notify(str(e), variant="error")
            return
        ctx.ops.set_view(view=view)

    def learn(self, ctx):
        summary = ctx.panel.state.summary or {}
        if not summary.get("corrected"):
            ctx.ops.notify(_NO_CORRECTIONS, variant="warning")
            return
        ctx.prompt(REFINE_URI, params={"field": ctx.panel.state.field})

    def _show(self, ctx, fields, field):
        summary = review_summary(ctx.dataset, field) if field else None
        classes = (summary or {}).get("counts", {})
        label = ctx.panel.state.review_label
        ctx.panel.state.set(
            {
                "fields": fields,
                "field": field,
                "summary": summary,
                "review_label": label if label in classes else next(iter(classes), None),
                "confidence_low": _number(ctx.panel.state.confidence_low, 0.0),
                "confidence_high": _number(ctx.panel.state.confidence_high, 1.0),
            }
        )
        ctx.panel.data.histogram = _histogram_traces(summary) if summary else []

    def render(self, ctx):
        panel = types.Object()
        summary = ctx.panel.state.summary
        if not summary:
            panel.md(_NO_LABELS, name="nothing")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        fields = ctx.panel.state.fields or []
        if len(fields) > 1:
            panel.enum(
                "field",
                fields,
                label="U-SAM field",
                view=_dropdown(fields),
                on_change=self.on_change_field,
            )
        panel.md(run_markdown(summary), name="run")
        panel.plot(
            "histogram",
            layout={
                "title": "Confidence of the instances",
                "barmode": "group",
                "xaxis": {"title": "confidence", "range": [0, 1]},
                "yaxis": {"title": "instances"},
                "height": 300,
            },
            config={"displayModeBar": False},
        )
        panel.md(corrections_markdown(summary), name="corrections_table")
        self._review_controls(panel, summary)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))

    def _review_controls(self, panel, summary):
        panel.btn(
            "review_uncertain_btn",
            label="Review the most uncertain first",
            icon="sort",
            variant="contained",
            on_click=self.review_uncertain,
        )
        classes = list(summary["counts"])
        if classes:
            # top-level inputs: the App keeps each input's value in the panel state at its path
            panel.enum("review_label", classes, label="Class", view=_dropdown(classes))
            panel.float("confidence_low", min=0.0, max=1.0, default=0.0, label="Confidence from")
            panel.float("confidence_high", min=0.0, max=1.0, default=1.0, label="Confidence to")
            panel.btn(
                "review_class_btn",
                label="Review a class",
                icon="filter_alt",
                variant="outlined",
                on_click=self.review_class,
            )
        corrected = summary.get("corrected", 0)
        panel.btn(
            "learn_btn",
            label="Learn from my corrections",
            icon="school",
            variant="contained",
            disabled=not corrected,
            on_click=self.learn,
        )
        if not corrected:
            panel.md(_NO_CORRECTIONS, name="no_corrections")
        panel.btn("refresh_btn", label="Refresh", icon="refresh", on_click=self.refresh)


def run_markdown(summary):
    """The run, the instances per class and the evaluation, as markdown."""
    run = summary["run"]
    stage = run.get("head_stage") or "unknown"
    threshold = run.get("threshold")
    lines = [
        f"#### Predictions `{summary['field']}`",
        f"- head: `{run.get('head') or 'not recorded'}` ({stage}"
        f"{', adapted to this domain' if run.get('adapted') else ''})",
        f"- threshold: {'not recorded' if threshold is None else f'{threshold:g}'}",
        f"- labelled: {summary['labelled']} of {summary['samples']} samples, "
        f"{summary['instances']} instances",
        "",
        "| class | instances |",
        "|---|---:|",
        *(f"| {name} | {count} |" for name, count in summary["counts"].items()),
    ]
    evaluation = summary.get("evaluation")
    if evaluation:
        lines += [
            "",
            f"**Evaluation** `{evaluation['eval_key']}` against `{evaluation['gt_field']}`: "
            f"mIoU {_figure(evaluation.get('mean_iou'))}, "
            f"mAP50 {_figure(evaluation.get('map50'))}",
        ]
    else:
        lines += ["", "No evaluation yet (U-SAM: evaluate predictions, against ground truth)."]
    return "\n".join(lines)


def corrections_markdown(summary):
    """Corrections per class and kind, as a markdown table."""
    rows = [
        f"| {name} | {kinds['wrong']} | {kinds['ok']} | {kinds['relabel']} |"
        for name, kinds in summary["corrections"].items()
    ]
    return "\n".join(
        [
            f"**Corrections**: {summary['corrected']} instances",
            "",
            "| class | wrong | ok | relabelled |",
            "|---|---:|---:|---:|",
            *rows,
        ]
    )


def _histogram_traces(summary):
    """Plotly bar traces: one per class, at the bins' centres."""
    edges = summary["histogram"]["edges"]
    centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    counts = summary["histogram"]["counts"]
    names = [n for n in counts if n != ALL_CLASSES] or [ALL_CLASSES]
    return [{"type": "bar", "name": name, "x": centres, "y": counts[name]} for name in names]


def _dropdown(values):
    dropdown = types.DropdownView()
    for value in values:
        dropdown.add_choice(value, label=value)
    return dropdown


def _number(value, default):
    return default if value is None else float(value)


def _figure(value):
    return "n/a" if value is None else f"{value:.3f}"


_NO_LABELS = (
    "### U-SAM\nThis dataset has no U-SAM labels yet: run **U-SAM: label images** (or "
    "`usam predict`) with a trained head, then reopen this panel."
)
_NO_CORRECTIONS = (
    "No corrections yet: in the grid or a sample, tag U-SAM's instances `usam:wrong` or "
    "`usam:ok`, or edit their label; then U-SAM can learn from them."
)
