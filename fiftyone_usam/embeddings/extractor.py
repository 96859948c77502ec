"""`MaskEmbeddingExtractor`: images -> per-prompt masks, IoU predictions and mask-token embeddings.

The image encoder runs once per image (batched across images); all ``d`` prompts of an image (the
grid's points, or a label field's boxes or points) then go through the mask decoder in one
batched call (`embeddings.decoder`). SAM does not return the decoder's output mask tokens, so a
forward hook reads them as they pass; the masks and IoUs are exactly what
``SamPredictor.predict_torch`` gives for the same prompts.

After the decoder, the masks are upsampled, scored and run-length encoded on the model's device
(`mask_runs`): only their runs reach the host, where a small thread pool turns them into COCO
RLE strings while the device decodes the next image (``mask_encoding``, ``encode_workers``);
`MaskEmbeddingExtractor.pipelined` lets that overlap span batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fiftyone_usam.devices import Precision, resolve_dtype
from fiftyone_usam.embeddings import sam_backend
from fiftyone_usam.embeddings.decoder import prompt_batches, run_decoder
from fiftyone_usam.embeddings.fast_attention import (
    EncoderAttention,
    resolve_attention,
    sdpa_attention,
)
from fiftyone_usam.embeddings.mask_runs import MaskRuns, host_counts, mask_runs, scaled_counts
from fiftyone_usam.embeddings.prompts import PromptSet
from fiftyone_usam.embeddings.proposals import MaskProposals
from fiftyone_usam.embeddings.sam_backend import LoadedSam
from fiftyone_usam.embeddings.store import StoreSpec

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

EMBEDDING_DIM = 4 * sam_backend.PROMPT_DIM
MaskMode = Literal["full", "none"]
MASK_MODES: tuple[str, ...] = ("full", "none")
MaskEncoding = Literal["device", "host"]
MASK_ENCODINGS: tuple[str, ...] = ("device", "host")

# one decoder chunk's masks: COCO RLE strings already, or runs to turn into them on the host
_MaskPart = list[bytes] | MaskRuns
# runs an image's host part: a thread pool's submit, or at once
_RunHost = Callable[[Callable[[], MaskProposals]], Future[MaskProposals]]
# ``submit(images, prompts=None)`` of `MaskEmbeddingExtractor.pipelined`
SubmitBatch = Callable[..., list[Future[MaskProposals]]]
Prompts = Sequence[PromptSet | None] | None  # per image: a field's prompts, or None: the grid


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
        masks: ``full`` keeps every mask (as RLE) and its stability score; ``none`` keeps only
            the embeddings and IoU predictions (no upsampling at all), which is all training
            reads: the proposals' ``mask_rles`` are empty and their stability scores NaN.
        mask_encoding: ``device`` thresholds the masks and finds their COCO run lengths on the
            model's device, so only the runs (a few MB an image) are copied to the host;
            ``host`` copies the thresholded masks (``d x 3 x H x W`` bytes) and encodes them
            there with pycocotools, the reference. Both give the same bytes; images above
            ``max_mask_pixels`` are always encoded on the host.
        encode_workers: threads that turn runs into RLE strings and build each image's
            proposals while the device decodes the next image; 0 does it inline. Results
            come in order and an error in a worker is raised by `extract`.
        encoder_attention: ``sdpa`` runs the image encoder's attention through PyTorch's fused
            ``scaled_dot_product_attention`` (equal to ``reference`` within float rounding,
            faster and lighter on CUDA); ``auto`` is ``sdpa`` on CUDA, ``reference`` elsewhere.
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
        masks: MaskMode = "full",
        mask_encoding: MaskEncoding = "device",
        encode_workers: int = 1,
        encoder_attention: EncoderAttention = "auto",
    ) -> None:
        _check_choice("masks", masks, MASK_MODES)
        _check_choice("mask_encoding", mask_encoding, MASK_ENCODINGS)
        if points_per_side < 1 or batch_size < 1 or points_per_batch < 1:
            raise ValueError("points_per_side, batch_size and points_per_batch must be at least 1")
        if encode_workers < 0:
            raise ValueError(f"encode_workers must be 0 (inline) or more, got {encode_workers}")
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
        self.masks = masks
        self.mask_encoding = mask_encoding
        self.encode_workers = encode_workers
        self.encoder_attention = resolve_attention(encoder_attention, self.device)

    @property
    def model(self) -> Sam:
        """The underlying ``segment_anything`` Sam."""
        return self.sam.model

    @property
    def num_points(self) -> int:
        """``d``, prompts per image."""
        return self.points_per_side**2

    def extract(self, images: Sequence[np.ndarray], prompts: Prompts = None) -> list[MaskProposals]:
        """Extracts mask proposals for each image.

        Args:
            images: `(H, W, 3)` uint8 RGB arrays, any sizes.
            prompts: per image, a label field's prompts (`PromptSet`: boxes or points, in
                relative coordinates) or None for the point grid; None: the grid for all.

        Returns:
            One `MaskProposals` per image, in order: for a prompt set, one row per prompt (in
            its order, with its id), ``m`` masks each (a box: SAM's single mask, equal to
            ``SamPredictor.predict_torch(boxes=..., multimask_output=False)``; points: its
            three).
        """
        with self.pipelined() as submit:
            return [future.result() for future in submit(images, prompts)]

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[SubmitBatch]:
        """`extract` batch by batch, a batch's host work overlapping the next one's device work.

        Within the block, ``submit(images, prompts=None)`` runs the device's part of `extract`
        at once (and raises its errors) and returns one future per image, in order, for the
        host's part (RLE strings from the runs, the proposals), done by ``encode_workers``
        threads while the caller goes on, e.g. submits the next batch; a future's error is its
        image's (with ``encode_workers=0`` that part runs, and raises, in ``submit``). Take a
        batch's results before submitting the one after next (pending futures hold their
        masks' runs). Leaving the block drops the host work not yet started.
        """
        # an executor starts its threads on its first submit: none start for encode_workers=0
        pool = ThreadPoolExecutor(max(1, self.encode_workers), thread_name_prefix="usam-rle")
        try:
            yield partial(self._submit, pool.submit if self.encode_workers else _run_now)
        finally:
            pool.shutdown(cancel_futures=True)

    def _submit(
        self, run: _RunHost, images: Sequence[np.ndarray], prompts: Prompts = None
    ) -> list[Future[MaskProposals]]:
        """The device's part of `extract` now; each image's host part handed to ``run``."""
        for image in images:
            _check_image(image)
        per_image = list(prompts) if prompts is not None else [None] * len(images)
        if len(per_image) != len(images):
            raise ValueError(f"{len(per_image)} prompt sets for {len(images)} images")
        futures: list[Future[MaskProposals]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            features = self.encode(chunk)
            for i, image in enumerate(chunk):
                decoded = self._decode_to_host(
                    features[i : i + 1], image.shape[:2], per_image[start + i]
                )
                futures.append(run(decoded))
        return futures

    def encode(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Runs the image encoder on a batch: `(B, 256, h, w)` float32 image embeddings."""
        import torch

        size = self.sam.image_size
        with torch.inference_mode(), self._autocast(), self._attention():
            hwc = [
                torch.as_tensor(sam_backend.resize_image(im, size), device=self.device)
                for im in images
            ]
            chw = [self.model.preprocess(t.permute(2, 0, 1).contiguous()[None]) for t in hwc]
            return self.model.image_encoder(torch.cat(chw)).float()

    def decode(
        self,
        features: torch.Tensor,
        image_size: tuple[int, int],
        prompts: PromptSet | None = None,
    ) -> MaskProposals:
        """Decodes all prompts of one image, ``points_per_batch`` per mask-decoder call.

        Args:
            features: `(1, 256, h, w)` image embedding from `encode`.
            image_size: `(H, W)` of the original image.
            prompts: a label field's prompts; None: the grid.
        """
        return self._decode_to_host(features, image_size, prompts)()

    def _decode_to_host(
        self, features: torch.Tensor, image_size: tuple[int, int], prompts: PromptSet | None
    ) -> Callable[[], MaskProposals]:
        """The device's part of `decode`; the host's part (runs into RLE strings) is left in
        the function it returns."""
        import torch

        h, w = int(image_size[0]), int(image_size[1])
        anchors, batches = prompt_batches(
            prompts, self.points_per_side, (h, w), self.sam.image_size, self.points_per_batch
        )
        multimask = prompts is None or prompts.masks_per_prompt > 1
        parts: list[_MaskPart] = []
        ious, token_parts, stabilities = [], [], []
        for batch in batches:
            # each batch's masks are encoded before the next is decoded: memory stays that of
            # one batch whatever the number of prompts
            with torch.inference_mode(), self._autocast():
                low_res, iou, tokens = run_decoder(
                    self.model, features.to(self.device), batch, multimask
                )
            if self.masks == "none":
                chunk_stability = np.full(tuple(iou.shape), np.nan, np.float32)
            else:
                chunk_parts, chunk_stability = self._full_resolution_masks(low_res.float(), (h, w))
                parts.extend(chunk_parts)
            ious.append(iou.float().cpu())
            token_parts.append(tokens.to(torch.float16).cpu())
            stabilities.append(chunk_stability)
            del low_res
        proposals = MaskProposals(
            embeddings=torch.cat(token_parts).reshape(len(anchors), EMBEDDING_DIM).numpy(),
            iou_predictions=torch.cat(ious).numpy(),
            stability_scores=np.concatenate(stabilities),
            points=anchors,
            image_size=(h, w),
            mask_rles=(),
            prompt_ids=() if prompts is None else prompts.ids,
        )
        return partial(_with_masks, proposals, parts)

    def _full_resolution_masks(
        self, low_res: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[list[_MaskPart], np.ndarray]:
        """Upsamples `(d, 3, h', w')` logits in chunks; returns each chunk's masks (RLEs, or
        runs on the host for ``mask_encoding="device"``) and the `(d, 3)` stability."""
        import torch

        h, w = image_size
        if h * w > self.max_mask_pixels:
            return self._scaled_masks(low_res, image_size)
        input_size = sam_backend.resized_shape(h, w, self.sam.image_size)
        per_point = low_res.shape[1] * h * w * 4
        step = max(1, self.max_mask_bytes // per_point)
        threshold = self.model.mask_threshold
        parts: list[_MaskPart] = []
        stability = []
        with torch.inference_mode():
            for start in range(0, low_res.shape[0], step):
                logits = self.model.postprocess_masks(
                    low_res[start : start + step], input_size, (h, w)
                )
                stability.append(
                    sam_backend.stability_score(logits, threshold, self.stability_offset).cpu()
                )
                if self.mask_encoding == "device":
                    parts.append(mask_runs(logits.flatten(0, 1), threshold).cpu())
                else:
                    parts.append(host_counts(logits.flatten(0, 1), threshold))
        return parts, torch.cat(stability).float().numpy()

    def _scaled_masks(
        self, low_res: torch.Tensor, image_size: tuple[int, int]
    ) -> tuple[list[_MaskPart], np.ndarray]:
        """`_full_resolution_masks` for a large image: logits at about ``max_mask_pixels``,
        then each mask scaled to `(H, W)` by nearest neighbour and encoded on its own."""
        import torch

        h, w = image_size
        scale = (self.max_mask_pixels / (h * w)) ** 0.5
        small = (max(1, round(h * scale)), max(1, round(w * scale)))
        input_size = sam_backend.resized_shape(*small, self.sam.image_size)
        threshold = self.model.mask_threshold
        rles: list[bytes] = []
        stability = []
        with torch.inference_mode():
            for point in range(low_res.shape[0]):
                logits = self.model.postprocess_masks(low_res[point : point + 1], input_size, small)
                stability.append(
                    sam_backend.stability_score(logits, threshold, self.stability_offset).cpu()
                )
                rles.extend(scaled_counts((logits[0] > threshold).cpu().numpy(), (h, w)))
        return [rles], torch.cat(stability).float().numpy()

    def _attention(self) -> contextlib.AbstractContextManager[Any]:
        if self.encoder_attention == "sdpa":
            return sdpa_attention(self.model.image_encoder)
        return contextlib.nullcontext()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def _with_masks(proposals: MaskProposals, parts: list[_MaskPart]) -> MaskProposals:
    """``proposals`` with the masks of ``parts``, their runs encoded now (the host's work)."""
    rles = [r for part in parts for r in (part.counts() if isinstance(part, MaskRuns) else part)]
    return replace(proposals, mask_rles=tuple(rles))


def _run_now(fn: Callable[[], MaskProposals]) -> Future[MaskProposals]:
    """``fn()`` run at once, as a finished future (its error raised at once)."""
    future: Future[MaskProposals] = Future()
    future.set_result(fn())
    return future


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_image(image: Any) -> None:
    shape, dtype = getattr(image, "shape", None), getattr(image, "dtype", type(image).__name__)
    if not isinstance(image, np.ndarray) or image.shape[2:] != (3,) or dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB array, got shape {shape} and dtype {dtype}; "
            "read files with fiftyone_usam.images.load_rgb, or convert PIL images with to_rgb"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
