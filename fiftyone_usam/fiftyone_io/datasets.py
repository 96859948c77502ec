"""Finding datasets and views, and recording on a dataset where its artifacts are."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fiftyone_usam.config import config_to_dict
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.errors import DatasetNotFoundError

if TYPE_CHECKING:
    import fiftyone as fo

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
    if len(view) == 0:
        what = "dataset" if isinstance(dataset, fo.Dataset) else "the view of dataset"
        raise DatasetNotFoundError(
            f"{what} {view.dataset_name!r} has no samples: add images to it first (e.g. "
            "`fiftyone datasets create --name NAME --dataset-dir DIR --type "
            "fiftyone.types.ImageDirectory`, or dataset.add_images_dir(DIR) in Python)"
        )
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


def usam_dir(dataset_name: str) -> Path:
    """Where U-SAM keeps a dataset's artifacts by default: beside FiftyOne's own dataset files,
    ``<fo.config.default_dataset_dir>/usam/<dataset>``."""
    import fiftyone as fo

    return Path(fo.config.default_dataset_dir).expanduser() / "usam" / dataset_name


def default_store_path(dataset_name: str, spec: StoreSpec) -> Path:
    """Where a dataset's store of ``spec`` goes when none is named (``...-nomasks`` for a store
    without masks, so it never takes the place of the store labelling reads;
    ``...-prompts-<field>`` for the prompts of a label field, ``...-view-<view>`` for a view's
    embeddings)."""
    name = f"embeddings-{spec.sam_variant}-p{spec.points_per_side}"
    if not spec.on_grid:
        name = f"embeddings-{spec.sam_variant}-prompts-{spec.prompt_field}"
    if spec.view:
        return usam_dir(dataset_name) / f"{name}-view-{spec.view.replace(':', '-')}"
    return usam_dir(dataset_name) / (name if spec.has_masks else f"{name}-nomasks")


def default_head_path(dataset_name: str) -> Path:
    """Where `train_head` writes when no ``--out`` is given."""
    return usam_dir(dataset_name) / "head"


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


def locate_store(
    view: fo.Dataset | fo.DatasetView,
    spec: StoreSpec | Mapping[str, Any] | None = None,
    store: str | Path | None = None,
    *,
    complete: bool = False,
    default: bool = False,
    masks: bool | None = True,
) -> Path | None:
    """Which EmbeddingStore holds (or is to hold) a view's mask proposals: the one rule.

    In order:

    1. ``store`` when given (it need not exist yet);
    2. the newest store recorded on the dataset whose directory holds a store, whose spec
       matches ``spec`` (a `StoreSpec`: equal but for ``mask_format``; a mapping: those fields
       equal, or in the set given for a field; None: any) and whose masks are as ``masks``
       says, and, with ``complete``, that holds every sample of ``view``;
    3. with ``default`` and a `StoreSpec`: the default location for that spec, or a folder beside
       it when the default holds another SAM's store (e.g. the same variant, other weights);
    4. None.

    Args:
        masks: True (default): only a store that keeps SAM's masks, as labelling needs (a store
            embedded with ``masks="none"`` is never picked to label from); False: only one
            without; None: either (training reads only the embeddings).
    """
    if store is not None:
        return Path(store).expanduser()
    ids = set(view.values("id")) if complete else set()
    for entry in reversed(recorded_stores(view)):
        path = Path(entry["path"])
        if not (path / "spec.json").is_file() or not _matches(entry.get("spec", {}), spec):
            continue
        found = EmbeddingStore.open(path)
        if isinstance(spec, StoreSpec) and found.spec.with_masks(True) != spec.with_masks(True):
            continue
        if masks is not None and found.spec.has_masks != masks:
            continue
        if not complete or ids <= found.sample_ids():
            return path
    if default and isinstance(spec, StoreSpec):
        path = default_store_path(view.dataset_name, spec)
        if (path / "spec.json").is_file() and EmbeddingStore.open(path).spec != spec:
            path = path.with_name(f"{path.name}-{spec.checkpoint_sha256[:12]}")
        return path
    return None


def find_store(
    dataset: fo.Dataset | fo.DatasetView,
    spec: StoreSpec | None = None,
    *,
    masks: bool | None = True,
) -> Path | None:
    """The newest recorded store whose directory exists and (when given) whose spec matches
    (`locate_store` without a named store): by default one that keeps its masks, to label
    from; ``masks=None`` also finds one embedded with ``masks="none"`` (enough to train)."""
    return locate_store(dataset, spec, masks=masks)


def _matches(recorded: Mapping[str, Any], spec: StoreSpec | Mapping[str, Any] | None) -> bool:
    if spec is None or isinstance(spec, StoreSpec):
        return True  # a StoreSpec is compared with the store's own spec.json
    return all(
        recorded.get(name) in value
        if isinstance(value, (set, frozenset))
        else recorded.get(name) == value
        for name, value in spec.items()
    )


HEADS_KEY = "usam_heads"


def recorded_heads(dataset: fo.Dataset | fo.DatasetView) -> list[dict[str, Any]]:
    """The heads `train_head` recorded on a dataset, newest last (``path``, ``stages``,
    ``classes``, ``label_field``, ``updated_at``)."""
    return list(root_dataset(dataset).info.get(HEADS_KEY, []))
