"""COCO run lengths of thresholded masks, computed where the logits are (GPU or CPU).

`mask_runs` is the fast path, `host_counts` the reference it equals (the thresholded masks
copied to the host whole and encoded there by pycocotools), `scaled_counts` the host encoding
of masks computed at a smaller size (very large images).

COCO RLE lists a mask's pixels in column-major (Fortran) order as alternating runs of 0s and
1s, the first run counting 0s (zero long when the first pixel is set). A full-resolution mask
holds ``H * W`` bytes but typically a few thousand runs, so `mask_runs` finds the run boundaries
on the logits' device and only the runs travel to the host, where `MaskRuns.counts` turns them
into the compressed ``counts`` strings that ``pycocotools.mask.encode`` would give.

How the runs are found: each mask is laid out column-major between a leading 0 and a trailing
pixel that differs from its last one. A pixel that differs from the one before it ends a run,
so the positions of changes are the runs' end positions, and the forced last change ends the
last run; differences of consecutive end positions are the run lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fiftyone_usam.masks import encode_masks

if TYPE_CHECKING:
    import torch

# runs and their end positions travel as int32
_MAX_PIXELS = 2**31 - 2


@dataclass(frozen=True, eq=False)
class MaskRuns:
    """COCO run lengths of ``n`` masks of one size, on a device or on the host.

    Attributes:
        runs: `(R,)` int32, every mask's runs one mask after the other; a mask's runs add up
            to ``H * W`` and start with a run of 0s.
        lengths: `(n,)` int32, how many runs each mask has (at least 1).
        size: `(H, W)` of the masks.
    """

    runs: torch.Tensor
    lengths: torch.Tensor
    size: tuple[int, int]

    @property
    def num_masks(self) -> int:
        """``n``."""
        return int(self.lengths.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes the runs take: what `cpu` copies from the device."""
        return int(self.runs.nbytes + self.lengths.nbytes)

    def cpu(self) -> MaskRuns:
        """The same runs in host memory (the only device-to-host copy of the masks)."""
        return MaskRuns(self.runs.cpu(), self.lengths.cpu(), self.size)

    def counts(self) -> list[bytes]:
        """The ``n`` masks' compressed COCO RLE ``counts``, exactly ``mask_utils.encode``'s.

        Runs on the host (call `cpu` first when the runs are on a GPU).
        """
        return runs_to_counts(self.runs.numpy(), self.lengths.numpy(), self.size)


def mask_runs(logits: torch.Tensor, threshold: float) -> MaskRuns:
    """Run lengths of the masks ``logits > threshold``, computed on the logits' device.

    Args:
        logits: `(n, H, W)` float mask logits, on any device.
        threshold: the mask threshold (SAM's ``mask_threshold``).

    Returns:
        `MaskRuns` on ``logits``' device; ``runs.cpu()`` is all that needs to reach the host.

    Raises:
        ValueError: ``logits`` is not 3-D, or a mask has more than 2**31 - 2 pixels.
    """
    import torch

    if logits.ndim != 3:
        raise ValueError(f"expected (n, H, W) mask logits, got shape {tuple(logits.shape)}")
    n, h, w = (int(s) for s in logits.shape)
    pixels = h * w
    if pixels > _MAX_PIXELS:
        raise ValueError(
            f"masks of {h}x{w} pixels are too large for int32 run lengths; lower "
            "max_mask_pixels so that large images get their masks at a smaller size"
        )
    if n == 0:
        empty = torch.zeros(0, dtype=torch.int32, device=logits.device)
        return MaskRuns(empty, empty, (h, w))
    # per mask: a leading 0, the pixels in column-major order, a pixel unlike the last one
    padded = torch.empty((n, pixels + 2), dtype=torch.bool, device=logits.device)
    padded[:, 0] = False
    padded[:, 1 : pixels + 1].view(n, w, h).copy_((logits > threshold).transpose(1, 2))
    padded[:, pixels + 1] = ~padded[:, pixels]
    changes = padded[:, 1:] != padded[:, :-1]  # (n, H*W + 1): pixel j ends a run
    del padded
    ends = torch.flatten(changes).nonzero()[:, 0]  # flat index mask * (H*W + 1) + end
    del changes
    stride = pixels + 1
    last = torch.arange(n, device=ends.device) * stride + pixels  # each mask's forced end
    last_index = torch.searchsorted(ends, last)  # where each mask's runs stop in ``ends``
    # A difference of flat indices is a run, except at a mask's first run, which starts one
    # after the previous mask's forced end (or after -1 for the first mask): one too many.
    runs = torch.diff(ends, prepend=ends.new_full((1,), -1))
    runs[torch.cat([last_index.new_zeros(1), last_index[:-1] + 1])] -= 1
    lengths = torch.diff(last_index, prepend=last_index.new_full((1,), -1))
    return MaskRuns(runs.to(torch.int32), lengths.to(torch.int32), (h, w))


def runs_to_counts(runs: np.ndarray, lengths: np.ndarray, size: tuple[int, int]) -> list[bytes]:
    """Compressed COCO RLE ``counts`` from uncompressed run lengths (on the host).

    Args:
        runs: `(R,)` integer run lengths of all masks, one mask after the other.
        lengths: `(n,)` runs per mask.
        size: `(H, W)` of the masks.

    Returns:
        ``n`` compressed ``counts`` strings, as ``pycocotools.mask.encode`` gives them.
    """
    from pycocotools import mask as mask_utils

    if len(lengths) == 0:
        return []
    h, w = int(size[0]), int(size[1])
    parts = np.split(np.asarray(runs), np.cumsum(lengths)[:-1])
    rles = mask_utils.frPyObjects([{"size": [h, w], "counts": part} for part in parts], h, w)
    return [rle["counts"] for rle in rles]


def host_counts(logits: torch.Tensor, threshold: float) -> list[bytes]:
    """The reference encoding: masks thresholded, copied to the host whole, encoded there.

    Args:
        logits: `(n, H, W)` float mask logits, on any device.

    Returns:
        ``n`` compressed COCO RLE ``counts`` (pycocotools); `mask_runs` gives the same.
    """
    masks = logits > threshold
    # (n, W, H) in C order is (H, W, n) in Fortran order: what pycocotools takes.
    fortran = masks.transpose(1, 2).contiguous().cpu().numpy().view(np.uint8)
    return encode_masks(fortran.transpose(2, 1, 0))


def scaled_counts(masks: np.ndarray, size: tuple[int, int]) -> list[bytes]:
    """COCO RLE ``counts`` of small masks scaled to ``size`` by nearest neighbour, one at a
    time (host memory: one full-size mask at once).

    Args:
        masks: `(n, h, w)` bool masks.
        size: `(H, W)` to scale them to.
    """
    h, w = size
    rows = (np.arange(h) * masks.shape[1] // h).astype(np.intp)
    cols = (np.arange(w) * masks.shape[2] // w).astype(np.intp)
    out: list[bytes] = []
    for mask in masks:
        # (W, H) in C order is (H, W) in Fortran order: what pycocotools takes
        full = mask.T[cols][:, rows].view(np.uint8).T
        out.extend(encode_masks(full[:, :, None]))
    return out
