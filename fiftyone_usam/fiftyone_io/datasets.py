"""Finding datasets and views, and recording on a dataset where its artifacts are."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.errors import DatasetNotFoundError

if TYPE_CHECKING:
    import fiftyone as fo

    from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec

STORES_KEY = "usam_embedding_stores"


def resolve_view(
    dataset: str | fo.Dataset | fo.DatasetView, view_tag: str | None = None
) -> fo.DatasetView:
    """Turns a dataset name, dataset or view into a view, optionally of the samples with a tag.

    Raises:
        DatasetNotFoundError: no dataset of that name, or no sample has the tag.
    """
    import fiftyone as fo

    if isinstance(dataset, str):
        if not fo.dataset_exists(dataset):
            names = fo.list_datasets()
            shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise DatasetNotFoundError(
                f"no FiftyOne dataset named {dataset!r}. "
                + (f"Existing datasets: {shown}." if names else "There are no datasets yet.")
                + " (`fiftyone datasets list` shows them; a dataset must be persistent to be"
                " seen from another process.)"
            )
        dataset = fo.load_dataset(dataset)
    view = dataset.view()
    if view.media_type != "image":
        raise DatasetNotFoundError(
            f"dataset {dataset.name!r} holds {view.media_type} samples; U-SAM works on images"
        )
    if view_tag:
        tags = view.count_sample_tags()
        if view_tag not in tags:
            known = ", ".join(sorted(tags)) or "none"
            raise DatasetNotFoundError(
                f"no sample of {dataset.name!r} has the tag {view_tag!r} (tags: {known})"
            )
        view = view.match_tags(view_tag)
    return view


def default_store_path(dataset_name: str, spec: StoreSpec) -> Path:
    """Where a dataset's store goes when none is named: beside FiftyOne's own dataset files."""
    import fiftyone as fo

    name = f"embeddings-{spec.sam_variant}-p{spec.points_per_side}"
    return Path(fo.config.default_dataset_dir).expanduser() / "usam" / dataset_name / name


def root_dataset(collection: fo.Dataset | fo.DatasetView) -> fo.Dataset:
    """The dataset a view belongs to (a dataset is its own)."""
    import fiftyone as fo

    if isinstance(collection, fo.Dataset):
        return collection
    return fo.load_dataset(collection.dataset_name)


def record_entry(
    collection: fo.Dataset | fo.DatasetView, key: str, entry: dict[str, Any], match: str = "path"
) -> None:
    """Adds ``entry`` to the list ``dataset.info[key]``, replacing one with the same ``match``.

    The entry is stamped with ``updated_at`` (UTC); the newest entry is last.
    """
    dataset = root_dataset(collection)
    entries = [e for e in dataset.info.get(key, []) if e.get(match) != entry.get(match)]
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    entries.append({**entry, "updated_at": stamp})
    dataset.info[key] = entries
    dataset.save()


def record_store(collection: fo.Dataset | fo.DatasetView, store: EmbeddingStore) -> None:
    """Records a store's location and spec in ``dataset.info`` so later stages find it."""
    entry = {"path": str(Path(store.path).resolve()), "spec": config_to_dict(store.spec)}
    record_entry(collection, STORES_KEY, entry)


def recorded_stores(dataset: fo.Dataset | fo.DatasetView) -> list[dict[str, Any]]:
    """The stores recorded on a dataset, newest last (``path``, ``spec``, ``updated_at``)."""
    return list(root_dataset(dataset).info.get(STORES_KEY, []))


def find_store(dataset: fo.Dataset | fo.DatasetView, spec: StoreSpec | None = None) -> Path | None:
    """The newest recorded store whose directory exists and (when given) whose spec matches."""
    from fiftyone_usam.embeddings.store import EmbeddingStore

    for entry in reversed(recorded_stores(dataset)):
        path = Path(entry["path"])
        if not (path / "spec.json").is_file():
            continue
        if spec is None or EmbeddingStore.open(path).spec == spec:
            return path
    return None
