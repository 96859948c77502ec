"""`MaskEmbeddingExtractor`: images -> per-point masks, IoU predictions and mask-token embeddings.

The image encoder runs once per image (batched across images); all ``d`` grid points of an image
then go through the mask decoder in one batched call. SAM does not return the decoder's output
mask tokens, so a forward hook on the decoder's two-way transformer reads them as they pass; the
masks and IoUs are exactly what ``SamPredictor.predict_torch(..., multimask_output=True)`` gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.devices import Precision, resolve_dtype
from fiftyone_usam.embeddings import sam_backend
from fiftyone_usam.embeddings.prompts import grid_points_for_image
from fiftyone_usam.embeddings.proposals import MASKS_PER_POINT, MaskProposals
from fiftyone_usam.embeddings.sam_backend import LoadedSam
from fiftyone_usam.embeddings.store import StoreSpec
from fiftyone_usam.masks import encode_masks

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

EMBEDDING_DIM = 4 * sam_backend.PROMPT_DIM


def spec_for(sam: LoadedSam, points_per_side: int, like: StoreSpec | None = None) -> StoreSpec:
    """The store spec that embeddings of ``sam`` with this grid have.

    Args:
        like: a recorded spec (of a store or a head). When its weights hash names these same
            weights (their content, or the checkpoint file's hash that earlier versions
            recorded), its hash and variant name are kept, so the same weights always match.
    """
    sha, variant = sam.checkpoint_sha256, sam.variant
    if like is not None and sam.same_weights(like.checkpoint_sha256):
        # the same weights: the recorded hash and name stand (a SAM built in memory has no
        # variant name of its own, only a guess from its shape)
        sha, variant = like.checkpoint_sha256, like.sam_variant
    return StoreSpec(
        sam_variant=variant,
        checkpoint_sha256=sha,
        points_per_side=points_per_side,
        encoder_input_size=sam.image_size,
        embedding_dim=EMBEDDING_DIM,
    )


class MaskEmbeddingExtractor:
    """Runs SAM on a grid of point prompts and keeps what U-SAM needs per point.

    Args:
        sam: the SAM to run, loaded by `load_sam` (on its device, with its identity).
        points_per_side: grid size; ``d = points_per_side**2`` prompts per image.
        batch_size: images per image-encoder call.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``.
        stability_offset: logit offset of the stability score (SAM's default 1.0).
        max_mask_bytes: cap on the full-resolution mask logits held at once; the upsampling of
            an image's ``d x 3`` masks is split into chunks of points to stay under it.
        points_per_batch: prompts per mask-decoder call (as in SAM's automatic generator). The
            decoder copies the image embedding once per prompt, so this bounds its memory
            whatever the grid; the default keeps the paper's 10x10 grid in one call.
        max_mask_pixels: images larger than this get their mask logits (and stability scores)
            at a size of about this many pixels; each thresholded mask is then scaled to the
            original size (nearest neighbour) and encoded one at a time, so memory stays
            bounded for a 10000x10000 photo. Smaller images are exactly SAM's full resolution.
    """

    def __init__(
        self,
        sam: LoadedSam,
        points_per_side: int = 10,
        batch_size: int = 4,
        precision: Precision = "auto",
        stability_offset: float = 1.0,
        max_mask_bytes: int = 1 << 28,
        points_per_batch: int = 128,
        max_mask_pixels: int = 4096 * 4096,
    ) -> None:
        if points_per_side < 1 or batch_size < 1 or points_per_batch < 1:
            raise ValueError("points_per_side, batch_size and points_per_batch must be at least 1")
        if not isinstance(sam, LoadedSam):
            raise TypeError(
                f"MaskEmbeddingExtractor takes a LoadedSam, got {type(sam).__name__}: load it "
                "first with fiftyone_usam.load_sam(sam_or_variant, checkpoint, device=...)"
            )
        self.sam = sam
        self.device = next(self.model.parameters()).device
        self.dtype = resolve_dtype(precision, self.device)
        self.points_per_side = points_per_side
        self.batch_size = batch_size
        self.stability_offset = stability_offset
        self.max_mask_bytes = max_mask_bytes
        self.points_per_batch = points_per_batch
        self.max_mask_pixels = max_mask_pixels

    @property
    def model(self) -> Sam:
        """The underlying ``segment_anything`` Sam."""
        return self.sam.model

    @property
    def num_points(self) -> int:
        """``d``, prompts per image."""
        return self.points_per_side**2

    def extract(self, images: Sequence[np.ndarray]) -> list[MaskProposals]:
        """Extracts mask proposals for each image.

        Args:
            images: `(H, W, 3)` uint8 RGB arrays, any sizes.

        Returns:
            One `MaskProposals` per image, in order.
        """
        for image in images:
            _check_image(image)
        out: list[MaskProposals] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            features = self.encode(chunk)
            out.extend(
                self.decode(features[i : i + 1], image.shape[:2]) for i, image in enumerate(chunk)
            )
        return out

    def encode(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Runs the image encoder on a batch: `(B, 256, h, w)` float32 image embeddings."""
        import torch

        size = self.sam.image_size
        with torch.inference_mode(), self._autocast():
            batch = torch.cat(
                [
                    self.model.preprocess(
                        torch.as_tensor(sam_backend.resize_image(image, size), device=self.device)
                        .permute(2, 0, 1)
                        .contiguous()[None]
                    )
                    for image in images
                ]
            )
            return self.model.image_encoder(batch).float()

    def decode(self, features: torch.Tensor, image_size: tuple[int, int]) -> MaskProposals:
        """Decodes all grid points of one image, ``points_per_batch`` per mask-decoder call.

        Args:
            features: `(1, 256, h, w)` image embedding from `encode`.
            image_size: `(H, W)` of the original image.
        """
        import torch

        h, w = int(image_size[0]), int(image_size[1])
        points = grid_points_for_image(self.points_per_side, h, w)
        coords = sam_backend.transform_coords(points, (h, w), self.sam.image_size)
        coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[:, None, :]
        rles: list[bytes] = []
        ious, token_parts, stabilities = [], [], []
        for start in range(0, len(points), self.points_per_batch):
            # each chunk's masks are encoded before the next is decoded: memory stays that of
            # one chunk whatever the grid
            low_res, iou, tokens = self._decode_points(
                features, coords_t[start : start + self.points_per_batch]
            )
            chunk_rles, chunk_stability = self._full_resolution_masks(low_res.float(), (h, w))
            rles.extend(chunk_rles)
            ious.append(iou.float().cpu())
            token_parts.append(tokens.to(torch.float16).cpu())
            stabilities.append(chunk_stability)
            del low_res
        tokens = torch.cat(token_parts).reshape(len(points), EMBEDDING_DIM)
        iou = torch.cat(ious)
        stability = np.concatenate(stabilities)
        return MaskProposals(
            embeddings=tokens.numpy(),
            iou_predictions=iou.numpy(),
            stability_scores=stability,
            points=points.astype(np.float32),
            image_size=(h, w),
            mask_rles=tuple(rles),
        )

    def _decode_points(
        self, features: torch.Tensor, coords: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One mask-decoder call for `(n, 1, 2)` prompt points.

        Returns:
            `(n, 3, h', w')` low-resolution logits, `(n, 3)` IoU predictions and `(n, 4, 256)`
            output mask tokens.
        """
        import torch

        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=self.device)
        with torch.inference_mode(), self._autocast():
            sparse, dense = self.model.prompt_encoder(
                points=(coords, labels), boxes=None, masks=None
            )
            with self._capture_mask_tokens() as captured:
                low_res, iou = self.model.mask_decoder(
                    image_embeddings=features.to(self.device),
                    image_pe=self.model.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=True,
                )
        return low_res, iou, captured["tokens"]

    def _full_resolution_masks(
        self, low_res: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[list[bytes], np.ndarray]:
        """Upsamples `(d, 3, h', w')` logits in chunks; returns RLEs and `(d, 3)` stability."""
        import torch

        h, w = image_size
        if h * w > self.max_mask_pixels:
            return self._scaled_masks(low_res, image_size)
        input_size = sam_backend.resized_shape(h, w, self.sam.image_size)
        per_point = MASKS_PER_POINT * h * w * 4
        step = max(1, self.max_mask_bytes // per_point)
        threshold = self.model.mask_threshold
        rles: list[bytes] = []
        stability = []
        with torch.inference_mode():
            for start in range(0, low_res.shape[0], step):
                logits = self.model.postprocess_masks(
                    low_res[start : start + step], input_size, (h, w)
                )
                stability.append(
                    sam_backend.stability_score(logits, threshold, self.stability_offset).cpu()
                )
                masks = (logits > threshold).flatten(0, 1)  # (n, H, W)
                # (n, W, H) in C order is (H, W, n) in Fortran order: what pycocotools takes.
                fortran = masks.transpose(1, 2).contiguous().cpu().numpy().view(np.uint8)
                rles.extend(encode_masks(fortran.transpose(2, 1, 0)))
        return rles, torch.cat(stability).float().numpy()

    def _scaled_masks(
        self, low_res: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[list[bytes], np.ndarray]:
        """`_full_resolution_masks` for a large image: logits at about ``max_mask_pixels``,
        then each mask scaled to `(H, W)` by nearest neighbour and encoded on its own."""
        import torch

        h, w = image_size
        scale = (self.max_mask_pixels / (h * w)) ** 0.5
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        input_size = sam_backend.resized_shape(*small, self.sam.image_size)
        rows = (np.arange(h) * small[0] // h).astype(np.intp)
        cols = (np.arange(w) * small[1] // w).astype(np.intp)
        threshold = self.model.mask_threshold
        rles: list[bytes] = []
        stability = []
        with torch.inference_mode():
            for point in range(low_res.shape[0]):
                logits = self.model.postprocess_masks(low_res[point : point + 1], input_size, small)
                stability.append(
                    sam_backend.stability_score(logits, threshold, self.stability_offset).cpu()
                )
                for mask in (logits[0] > threshold).cpu().numpy():
                    # (W, H) in C order is (H, W) in Fortran order: what pycocotools takes
                    full = mask.T[cols][:, rows].view(np.uint8).T
                    rles.extend(encode_masks(full[:, :, None]))
        return rles, torch.cat(stability).float().numpy()

    @contextlib.contextmanager
    def _capture_mask_tokens(self) -> Iterator[dict[str, torch.Tensor]]:
        """Reads the decoder's output mask tokens, `(d, 4, 256)`, from its transformer's output."""
        decoder = self.model.mask_decoder
        captured: dict[str, torch.Tensor] = {}

        def hook(module: Any, inputs: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
            # Token order is [iou token, mask tokens..., prompt tokens] (MaskDecoder.predict_masks).
            captured["tokens"] = output[0][:, 1 : 1 + decoder.num_mask_tokens, :]

        handle = decoder.transformer.register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def _check_image(image: Any) -> None:
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
    ):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB array, got shape {shape} and dtype {dtype}; "
            "read files with fiftyone_usam.images.load_rgb, or convert PIL images with to_rgb"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
