"""Naming the masks of a user's own prompts (a label field's boxes or points).

Unlike the grid, where a mask the head does not recognise is dropped, every prompt the user
drew stays an instance: one per prompt, in prompt order, with the head's label, or
``background`` when no class reaches the threshold, so nothing the user drew silently
disappears. No NMS: two boxes on one object are the user's choice. Each instance carries the
prompt's id and, when it had one, its own label (``prompt_label``); with ``keep`` the prompt's
label is written instead of the head's (SAM gives the mask, the user the class) and the head's
opinion is kept as ``head_label`` / ``head_confidence``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fiftyone_usam.inference.postprocess import Instances, entropy
from fiftyone_usam.ontology import BACKGROUND, label_name

if TYPE_CHECKING:
    from fiftyone_usam.embeddings.proposals import MaskProposals


@dataclass(frozen=True)
class PromptLabels:
    """What a labelling run knows of its prompts.

    Attributes:
        labels: prompt id -> the prompt label's own class name (None: it has none).
        keep: write the prompt's own label instead of the head's (``--keep-prompt-labels``).
    """

    labels: Mapping[str, str | None] = field(default_factory=dict)
    keep: bool = False

    def extra_classes(self, classes: Sequence[str]) -> tuple[str, ...]:
        """With ``keep``, the prompts' own labels that are not among ``classes`` (sorted):
        they need label ids (and ``mask_targets``) of their own."""
        if not self.keep:
            return ()
        own = {name for name in self.labels.values() if name and name != BACKGROUND}
        return tuple(sorted(own - set(classes)))


def prompt_instances(
    proposals: MaskProposals,
    probs: np.ndarray,
    flat: np.ndarray,
    threshold: float,
    classes: Sequence[str],
    prompts: PromptLabels,
) -> Instances:
    """One instance per prompt.

    Args:
        proposals: an image's proposals of a label field's prompts (with ``prompt_ids``).
        probs: `(d, G)` class probabilities per prompt (the head's classes, or its groups).
        flat: `(d,)` the flat index of each prompt's chosen mask (`candidate_masks`).
        threshold: below it the head's label is background (0).
        classes: the run's classes (the head's ``G``, then `PromptLabels.extra_classes`).
        prompts: the prompts' own labels, and whether to keep them.

    Returns:
        `Instances` in prompt order; ``labels`` 0 where the head says background.
    """
    d = proposals.num_points
    best = probs.argmax(axis=1) if probs.size else np.zeros(d, np.int64)
    confidence = probs[np.arange(d), best] if probs.size else np.zeros(d)
    head_labels = np.where(confidence >= threshold, best + 1, 0).astype(np.int64)
    labels, confidences = head_labels.copy(), confidence.astype(np.float32)
    attributes: list[dict[str, Any]] = []
    for p, prompt_id in enumerate(proposals.prompt_ids):
        own = prompts.labels.get(prompt_id)
        described: dict[str, Any] = {"prompt_id": prompt_id}
        if own is not None:
            described["prompt_label"] = own
        if prompts.keep and own is not None:
            described["head_label"] = label_name(int(head_labels[p]), classes)
            described["head_confidence"] = float(confidence[p])
            labels[p] = 0 if own == BACKGROUND else list(classes).index(own) + 1
            known = 0 < labels[p] <= probs.shape[1]
            confidences[p] = probs[p, labels[p] - 1] if known else np.nan
        attributes.append(described)
    return Instances(
        rles=tuple(proposals.rle(int(i)) for i in flat),
        labels=labels,
        confidences=confidences,
        entropies=entropy(probs),
        sources=np.asarray(flat, dtype=np.int64),
        attributes=tuple(attributes),
    )
