"""The dataset side of a crawl: what crawled images a training dataset holds, adding new ones,
and remembering rejected URLs so later runs never fetch them again.

Sample fields: ``ground_truth`` (`fo.Classification`), ``source`` (``"crawled"``),
``source_url``, ``query``, ``engine``, ``sha256``, ``phash``, with image metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fiftyone_usam.fiftyone_io.training_dataset import LABEL_FIELD, training_sample
from fiftyone_usam.sources.collector import KeptImage

if TYPE_CHECKING:
    import fiftyone as fo

SOURCE = "crawled"
REJECTED_KEY = "usam_rejected_urls"  # in dataset.info: [[URL, reason], ...]
_MAX_REJECTED_REMEMBERED = 20_000


def held_images(dataset: fo.Dataset) -> list[tuple[str | None, str | None, str | None, str | None]]:
    """``(label, source_url, sha256, phash)`` of each crawled image the dataset holds."""
    from fiftyone import ViewField as F

    view = dataset.match(F("source") == SOURCE)
    columns = view.values([f"{LABEL_FIELD}.label", "source_url", "sha256", "phash"])
    return list(zip(*columns, strict=True))


def rejected_urls(dataset: fo.Dataset) -> set[str]:
    """The URLs earlier runs rejected (other than failed downloads)."""
    return {url for url, _ in dataset.info.get(REJECTED_KEY, [])}


def add_crawled(dataset: fo.Dataset, kept: list[KeptImage]) -> None:
    """Adds kept images as samples (one `fo.Classification` each, with their provenance)."""
    dataset.add_samples([_sample(k) for k in kept], progress=False)


def remember_rejections(dataset: fo.Dataset, rejected: dict[str, str]) -> None:
    """Stores a run's rejected URLs (URL -> reason) in ``dataset.info``, so later runs skip them.

    Failed downloads are not passed here: a server that was down may answer next time.
    """
    if not rejected:
        return
    # a list of pairs, not a dict: URLs are not safe MongoDB keys
    remembered = [*dataset.info.get(REJECTED_KEY, []), *rejected.items()]
    dataset.info[REJECTED_KEY] = [list(p) for p in remembered][-_MAX_REJECTED_REMEMBERED:]
    dataset.save()


def _sample(kept: KeptImage) -> fo.Sample:
    image = kept.image
    return training_sample(
        kept.path,
        kept.label,
        width=image.width,
        height=image.height,
        num_channels=image.num_channels,
        mime_type=image.mime_type,
        size_bytes=len(image.data),
        source=SOURCE,
        source_url=kept.url,
        query=kept.query,
        engine=kept.engine,
        sha256=image.sha256,
        phash=f"{image.phash:016x}",
    )
