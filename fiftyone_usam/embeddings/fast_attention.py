"""SAM's ViT attention through ``torch.nn.functional.scaled_dot_product_attention``.

segment_anything's ``Attention.forward`` builds the ``(tokens x tokens)`` attention map, adds
the decomposed relative-position terms (``add_decomposed_rel_pos``), takes its softmax and
multiplies by the values, each step a separate tensor. `sdpa_forward` computes the same thing
with one fused SDPA call, the relative-position terms passed as its additive ``attn_mask``; on
CUDA that runs PyTorch's memory-efficient kernel. The weights are the module's own; nothing is
copied.

`sdpa_attention` switches an encoder's attention blocks to it for the length of a ``with``
block and restores them afterwards, so a user's Sam is never left changed.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling.image_encoder import Attention

EncoderAttention = Literal["reference", "sdpa", "auto"]
ENCODER_ATTENTIONS: tuple[str, ...] = ("reference", "sdpa", "auto")


def resolve_attention(
    attention: EncoderAttention, device: torch.device
) -> Literal["reference", "sdpa"]:
    """``auto`` is ``sdpa`` on CUDA (a fused kernel) and ``reference`` elsewhere.

    Raises:
        ValueError: ``attention`` is none of `ENCODER_ATTENTIONS`.
    """
    if attention not in ENCODER_ATTENTIONS:
        raise ValueError(
            f"encoder_attention must be one of {', '.join(ENCODER_ATTENTIONS)}, got {attention!r}"
        )
    if attention == "auto":
        return "sdpa" if device.type == "cuda" else "reference"
    return attention


@contextlib.contextmanager
def sdpa_attention(encoder: torch.nn.Module) -> Iterator[int]:
    """Within the block, every ``segment_anything`` ``Attention`` in ``encoder`` runs
    `sdpa_forward`; on exit (also on error) each gets back the forward it had.

    Not thread-safe for one encoder used from several threads at once: a thread running it
    concurrently would get SDPA attention too (equal within float tolerance).

    Yields:
        The number of attention modules switched.
    """
    from segment_anything.modeling.image_encoder import Attention

    modules = [m for m in encoder.modules() if isinstance(m, Attention)]
    # an instance may carry its own forward already (another wrapper): put that one back
    saved = [m.__dict__.get("forward") for m in modules]
    try:
        for module in modules:
            module.forward = types.MethodType(sdpa_forward, module)
        yield len(modules)
    finally:
        for module, own in zip(modules, saved, strict=True):
            if own is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = own


def sdpa_forward(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` of segment_anything with one fused SDPA call.

    Args:
        attn: a ``segment_anything.modeling.image_encoder.Attention``.
        x: `(B, h, w, C)` tokens (a window or the whole image embedding grid).

    Returns:
        `(B, h, w, C)`, equal to ``Attention.forward(x)`` within float rounding.
    """
    import torch.nn.functional as F

    b, h, w, _ = x.shape
    heads = attn.num_heads
    # (3, B, heads, h*w, C / heads)
    qkv = attn.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = relative_position_bias(attn, q, (h, w)) if attn.use_rel_pos else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
    out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return attn.proj(out)


def relative_position_bias(attn: Attention, q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The decomposed relative-position terms ``add_decomposed_rel_pos`` adds to the map.

    Args:
        attn: the ``Attention`` whose ``rel_pos_h`` and ``rel_pos_w`` to use.
        q: `(B, heads, h*w, c)` queries (unscaled, as the reference uses them).
        size: `(h, w)` of the token grid.

    Returns:
        `(B, heads, h*w, h*w)` additive bias in ``q``'s dtype.
    """
    import torch
    from segment_anything.modeling.image_encoder import get_rel_pos

    h, w = size
    b, heads, _, c = q.shape
    rel_h = get_rel_pos(h, h, attn.rel_pos_h)  # (h, h, c)
    rel_w = get_rel_pos(w, w, attn.rel_pos_w)  # (w, w, c)
    grid = q.reshape(b, heads, h, w, c)
    along_h = torch.einsum("bnhwc,hkc->bnhwk", grid, rel_h)
    along_w = torch.einsum("bnhwc,wkc->bnhwk", grid, rel_w)
    bias = along_h[:, :, :, :, :, None] + along_w[:, :, :, :, None, :]  # (B, n, h, w, h, w)
    return bias.reshape(b, heads, h * w, h * w).to(q.dtype)
