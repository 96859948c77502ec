"""Operator: compute SAM mask embeddings of a dataset into an EmbeddingStore."""

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_usam.embeddings.extractor import MASK_ENCODINGS, MASK_MODES
from fiftyone_usam.embeddings.fast_attention import ENCODER_ATTENTIONS
from fiftyone_usam.embeddings.sam_variants import OFFICIAL_VARIANTS
from fiftyone_usam.embeddings.store import spec_at
from fiftyone_usam.errors import USAMError

from .artifacts import new_store_error
from .engine import engine_inputs, engine_kwargs
from .progress import progress_callback, usam_config
from .validation import invalidate, no_dataset_form, path_error, sam_variant

# The official variants, and "custom": the one described beside the checkpoint.
_VARIANTS = [*OFFICIAL_VARIANTS, "custom"]


class EmbedOperator(foo.Operator):
    @property
    def config(self):
        return usam_config(
            "embed",
            "compute SAM mask embeddings",
            (
                "Runs SAM on a grid of point prompts per image and stores each mask's "
                "embedding, masks and scores, for training a U-SAM head and predicting."
            ),
        )

    def resolve_input(self, ctx):
        if form := no_dataset_form(ctx, "U-SAM: compute SAM mask embeddings"):
            return form
        inputs = types.Object()
        inputs.view_target(ctx)
        sam = inputs.enum(
            "sam",
            _VARIANTS,
            default="vit_b",
            label="SAM variant",
            description="vit_h is the most accurate, vit_b the fastest; custom: the variant "
            "described by <checkpoint-stem>.json beside the checkpoint.",
        )
        checkpoint = inputs.str(
            "checkpoint",
            label="Checkpoint (optional)",
            description="SAM weights on the server; a custom build needs a <stem>.json beside "
            "it. Default: the official checkpoint, found or downloaded.",
        )
        store = inputs.str(
            "store",
            label="Store directory (optional)",
            description="Where the embeddings go; an existing store is resumed. Default: "
            "<FiftyOne dataset dir>/usam/<dataset>/embeddings-<variant>-p<points>.",
        )
        params = ctx.params
        choice, weights = params.get("sam"), params.get("checkpoint")
        invalidate(checkpoint, path_error(weights, "SAM checkpoint"))
        variant, error = sam_variant(
            _variant(choice), weights, custom=choice == "custom", described_choice="custom"
        )
        invalidate(sam, error)
        points = params.get("points_per_side", 10)
        masks = params.get("masks") or "full"
        invalidate(
            store,
            new_store_error(params.get("store"), variant, points)
            or _masks_error(params.get("store"), masks),
        )
        tags = sorted(ctx.dataset.count_sample_tags()) if ctx.dataset else []
        if tags:
            inputs.enum("view_tag", tags, label="Only samples with tag (optional)")
        inputs.int(
            "points_per_side",
            default=10,
            min=1,
            label="Points per side",
            description="d = points_per_side^2 masks per image (100 in the paper).",
        )
        inputs.enum(
            "masks",
            list(MASK_MODES),
            default="full",
            label="Masks",
            description="full: keep SAM's masks, needed to label these images; none: only the "
            "embeddings, about half the store, enough to train a head on these images.",
        )
        inputs.str("device", label="Device (optional)", description="cpu, cuda or cuda:N.")
        inputs.int("batch_size", default=4, min=1, label="Batch size")
        engine_inputs(inputs, params, work="SAM runs")
        # speed only: neither changes what is stored
        inputs.enum(
            "encoder_attention",
            list(ENCODER_ATTENTIONS),
            default="auto",
            label="Encoder attention (advanced)",
            description="sdpa: PyTorch's fused attention, equal to reference within float "
            "rounding; auto: sdpa on CUDA, reference elsewhere.",
        )
        inputs.enum(
            "mask_encoding",
            list(MASK_ENCODINGS),
            default="device",
            label="Mask encoding (advanced)",
            description="device: the masks' run lengths found on SAM's device, only they "
            "copied to the host; host: the masks copied and encoded there. Same bytes stored.",
        )
        return types.Property(inputs, view=types.View(label="U-SAM: compute SAM mask embeddings"))

    def execute(self, ctx):
        from fiftyone_usam import embed

        params = ctx.params
        report = embed(
            ctx.target_view(),
            store=params.get("store") or None,
            sam=_variant(params.get("sam")),
            checkpoint=params.get("checkpoint") or None,
            view_tag=params.get("view_tag") or None,
            points_per_side=int(params.get("points_per_side") or 10),
            device=params.get("device") or None,
            batch_size=int(params.get("batch_size") or 4),
            masks=params.get("masks") or "full",
            encoder_attention=params.get("encoder_attention") or "auto",
            mask_encoding=params.get("mask_encoding") or "device",
            **engine_kwargs(params),
            progress=progress_callback(ctx, "images"),
        )
        ctx.ops.reload_dataset()
        return {
            "summary": report.summary(),
            "store": str(report.store),
            "embedded": report.embedded,
            "already_done": report.already_done,
            "failed": report.failed,
            "execution": report.execution,
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("summary", label="Result")
        outputs.str("store", label="Store")
        return types.Property(outputs)


def _variant(choice):
    """The form's choice as the library's ``sam``: None lets the checkpoint's config decide."""
    return None if choice in (None, "", "custom") else choice


def _masks_error(value, masks):
    """An existing store holds masks or none: adding the other kind to it is refused."""
    if not value:
        return None
    try:
        found = spec_at(value)
    except USAMError as e:
        return str(e)
    if found is None or found.has_masks == (masks == "full"):
        return None
    kept = "keeps SAM's masks" if found.has_masks else "holds no masks (embedded with masks none)"
    return (
        f"the store at {value} {kept}: choose masks {'full' if found.has_masks else 'none'} "
        "to add to it, or another store directory"
    )
