"""How often the head agrees with the labels the user's prompts already carry.

Read back from the instances a prompted `predict` wrote (each carries ``prompt_label``, and the
head's label as ``label``, or as ``head_label`` when the prompts' labels were kept), so the
figures are those of the labels on the dataset. Samples with a disagreement get the tag
``usam:disagree`` (and lose it once they agree), so a user can open exactly those in the App.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fiftyone as fo

DISAGREE_TAG = "usam:disagree"


@dataclass
class PromptAgreement:
    """The head against the prompts' own labels.

    Attributes:
        per_class: prompt label -> ``{"prompts": n, "agreed": k, "rate": k / n}``, for the
            prompt labels that are classes of the head.
        outside: prompt label -> prompts, for labels the head does not predict (never counted
            as disagreements).
        disagreeing: ids of the samples with at least one disagreement (tagged `DISAGREE_TAG`).
    """

    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    outside: dict[str, int] = field(default_factory=dict)
    disagreeing: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        """Agreement over all compared prompts (None: none was compared)."""
        total = sum(c["prompts"] for c in self.per_class.values())
        agreed = sum(c["agreed"] for c in self.per_class.values())
        return agreed / total if total else None

    def summary(self) -> str:
        """One line for people."""
        if self.rate is None:
            return "no prompt carries a label the head predicts: nothing to compare"
        classes = ", ".join(
            f"{name} {c['agreed']}/{c['prompts']}" for name, c in sorted(self.per_class.items())
        )
        outside = (
            f"; {sum(self.outside.values())} prompt(s) of other classes" if self.outside else ""
        )
        return (
            f"head agrees with the prompts' labels on {self.rate:.1%} ({classes}){outside}; "
            f"{len(self.disagreeing)} sample(s) with disagreements tagged {DISAGREE_TAG!r}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures (what the run records)."""
        return {
            "rate": self.rate,
            "per_class": self.per_class,
            "outside": self.outside,
            "disagreeing_samples": len(self.disagreeing),
        }


def prompt_agreement(
    view: fo.DatasetView, instances_field: str, classes: tuple[str, ...], kept: bool
) -> PromptAgreement:
    """Compares the head's labels with the prompts' own, and tags the samples that disagree.

    Args:
        view: the samples labelled (their tag is set or cleared; no other sample is touched).
        instances_field: the ``fo.Detections`` field `predict` wrote.
        classes: the head's classes (prompt labels outside them are only counted).
        kept: the prompts' labels were written (``--keep-prompt-labels``): the head's opinion
            is then the ``head_label`` attribute.

    Returns:
        The figures; the view's samples are tagged `DISAGREE_TAG` where a prompt disagrees.
    """
    head = "head_label" if kept else "label"
    base = f"{instances_field}.detections"
    ids, theirs, ours = view.values(["id", f"{base}.prompt_label", f"{base}.{head}"])
    out = PromptAgreement()
    known = set(classes)
    for sample_id, prompt_labels, head_labels in zip(ids, theirs, ours, strict=True):
        disagrees = False
        for own, said in zip(prompt_labels or [], head_labels or [], strict=True):
            if own is None:
                continue
            if own not in known:
                out.outside[own] = out.outside.get(own, 0) + 1
                continue
            counts = out.per_class.setdefault(own, {"prompts": 0, "agreed": 0})
            counts["prompts"] += 1
            counts["agreed"] += int(said == own)
            disagrees |= said != own
        if disagrees:
            out.disagreeing.append(sample_id)
    for counts in out.per_class.values():
        counts["rate"] = counts["agreed"] / counts["prompts"]
    _retag(view, set(out.disagreeing))
    return out


def _retag(view: fo.DatasetView, disagreeing: set[str]) -> None:
    """`DISAGREE_TAG` on exactly the view's disagreeing samples."""
    tagged = set(view.match_tags(DISAGREE_TAG).values("id"))
    if tagged - disagreeing:
        view.select(sorted(tagged - disagreeing)).untag_samples(DISAGREE_TAG)
    if disagreeing - tagged:
        view.select(sorted(disagreeing - tagged)).tag_samples(DISAGREE_TAG)
