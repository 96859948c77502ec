"""Operator: the head learns from the corrections made in the App, then relabels (the U-SAM
panel's "Learn from my corrections" runs it)."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.errors import USAMError
from fiftyone_usam.fiftyone_io.corrections import read_corrections

from .progress import progress_callback, usam_config
from .validation import invalidate, no_dataset_form

_LABEL = "U-SAM: learn from my corrections"


class RefineOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "refine",
            _LABEL.removeprefix("U-SAM: "),
            (
                "Fine-tunes the head on the instances you tagged usam:wrong or usam:ok or "
                "relabelled, then relabels the dataset from the cached embeddings (no SAM); "
                "your labels are kept."
            ),
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, _LABEL):
            return form
        params = ctx.params
        inputs = types.Object()
        inputs.view_target(ctx)
        field = inputs.str(
            "field",
            default="usam",
            required=True,
            label="U-SAM field prefix",
            description="The corrections are read from <prefix>_instances.",
        )
        try:
            found = read_corrections(ctx.target_view(), params.get("field") or "usam")
        except USAMError as e:
            invalidate(field, str(e))
        else:
            if not found:
                invalidate(
                    field, "no corrections yet: tag instances usam:wrong or usam:ok, or edit labels"
                )
            else:
                kinds = {k: sum(c.kind == k for c in found) for k in ("ok", "wrong", "relabel")}
                shown = ", ".join(f"{n} {k}" for k, n in kinds.items())
                inputs.view("found", types.Notice(label=f"{len(found)} corrections ({shown})"))
        inputs.str(
            "head", label="Head (optional)", description="Default: the one that labelled it."
        )
        inputs.str("out", label="Refined head directory (optional)")
        inputs.bool("relabel", default=True, label="Relabel from the cache")
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        return types.Property(inputs, view=types.View(label=_LABEL))

    def execute(self, ctx):
        from fiftyone_usam.stages.refine import refine

        params = ctx.params
        report = refine(
            ctx.target_view(),
            field=params.get("field") or "usam",
            head=params.get("head") or None,
            out=params.get("out") or None,
            relabel=bool(params.get("relabel", True)),
            device=params.get("device") or None,
            progress=progress_callback(ctx, "images"),
        )
        ctx.ops.reload_dataset()
        return {
            "summary": report.summary(),
            "head": str(report.head),
            "corrections": report.corrections,
            "restored": report.restored,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        return types.Property(outputs)
