"""Operator: adapt a trained head to the dataset's own images, without labels."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.embeddings.views import parse_view
from fiftyone_usam.fiftyone_io.datasets import usam_dir
from fiftyone_usam.head.adapt_config import INGREDIENTS

from .artifacts import newest_head, read_head
from .progress import progress_callback, usam_config
from .validation import invalidate, no_dataset_form

_LABEL = "U-SAM: adapt a head to these images"
VIEWS = ["hflip", "scale:0.75", "none"]


class AdaptOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "adapt",
            _LABEL.removeprefix("U-SAM: "),
            (
                "Self-trains the head on this dataset's images, without labels: input "
                "statistics, its own confident masks, agreement between two views, anchored "
                "to the original head. Then label with the adapted head."
            ),
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, _LABEL):
            return form
        params = ctx.params
        inputs = types.Object()
        inputs.view_target(ctx)
        head = inputs.str(
            "head",
            required=True,
            default=newest_head(ctx.dataset),
            label="Head",
            description="A head checkpoint directory, or a `usam train --out` directory.",
        )
        if params.get("head"):
            invalidate(head, read_head(params["head"])[1])
        inputs.str(
            "out",
            default=str(usam_dir(ctx.dataset.name) / "head-adapted"),
            required=True,
            label="Adapted head directory",
        )
        view = inputs.enum(
            "view",
            VIEWS,
            default="hflip",
            label="Second view",
            description="An augmented copy of each image (one more SAM pass) whose masks must "
            "agree with the original's; none: no view. Other scales: scale:S.",
        )
        if params.get("view") not in (None, "none"):
            try:
                parse_view(params["view"])
            except ValueError as e:
                invalidate(view, str(e))
        for name in INGREDIENTS:
            inputs.bool(name, default=True, label=name.replace("_", " ").capitalize())
        inputs.int("epochs", min=1, label="Epochs (optional)", description="Default: 10.")
        inputs.int("seed", label="Seed (optional)", description="Default: 0.")
        inputs.str("store", label="Target store (optional)")
        inputs.str("checkpoint", label="SAM checkpoint (optional)")
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        return types.Property(inputs, view=types.View(label=_LABEL))

    def execute(self, ctx):
        from fiftyone_usam.stages.adapt import adapt

        params = ctx.params
        view = params.get("view") or "hflip"
        report = adapt(
            ctx.target_view(),
            head=params["head"],
            out=params.get("out") or None,
            view=None if view == "none" else view,
            ingredients=[name for name in INGREDIENTS if params.get(name, True)],
            epochs=params.get("epochs") or None,
            seed=params.get("seed"),
            store=params.get("store") or None,
            checkpoint=params.get("checkpoint") or None,
            device=params.get("device") or None,
            progress=progress_callback(ctx, "images"),
        )
        return {
            "summary": report.summary(),
            "head": str(report.head),
            "images": report.images,
            "before": report.before.as_dict(),
            "after": report.after.as_dict(),
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        return types.Property(outputs)
