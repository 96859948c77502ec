"""`refine` on a labelled dataset: corrections from label tags, the refined head, a relabel
from the cache that keeps the reviewer's word, the CLI and operator, bad input."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import fiftyone_usam as usam
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.fiftyone_io.corrections import OK_TAG, WRONG_TAG, read_corrections
from fiftyone_usam.head.checkpoint import load_head
from tests.integration.test_plugin import manifest

KEEP_ALL = {"threshold": 0.0, "device": "cpu"}


@pytest.fixture
def labelled(make_dataset, image_files, tiny_head, tiny_checkpoint):
    dataset = make_dataset(image_files)
    usam.predict(dataset, head=tiny_head, checkpoint=tiny_checkpoint, **KEEP_ALL)
    return dataset


def _review(dataset):
    """Tags two instances wrong, confirms one, relabels one; returns what was done."""
    first, second = dataset.values("id")[:2]
    a = dataset[first].usam_instances.detections
    b = dataset[second].usam_instances.detections
    assert len(a) >= 2 and len(b) >= 2
    flip = {"disc": "square", "square": "disc"}
    done = {
        "wrong": [(first, a[0]), (second, b[0])],
        "ok": [(first, a[1])],
        "relabel": [(second, b[1])],
    }
    wrong_ids = [d.id for _, d in done["wrong"]]
    dataset.select_labels(ids=wrong_ids).tag_labels(WRONG_TAG)
    dataset.select_labels(ids=[a[1].id]).tag_labels(OK_TAG)
    sample = dataset[second]
    edited = sample.usam_instances.detections[1]
    edited.label = flip[edited.label]
    sample.save()
    return done, edited.label


def test_corrections_are_read_from_tags_and_edits(labelled):
    done, _ = _review(labelled)
    found = read_corrections(labelled, "usam")
    assert sorted(c.kind for c in found) == ["ok", "relabel", "wrong", "wrong"]
    relabel = next(c for c in found if c.kind == "relabel")
    assert relabel.label != relabel.head_label and relabel.label_id == done["relabel"][0][1].id
    with pytest.raises(ConfigError, match="wrote no labels under the prefix 'nope'"):
        read_corrections(labelled, "nope")


def test_refine_learns_relabels_from_the_cache_and_keeps_the_reviewers_word(
    labelled, tiny_head, tmp_path, monkeypatch
):
    done, new_label = _review(labelled)

    def no_sam(*args, **kwargs):
        raise AssertionError("refining reads the cached embeddings: SAM must not load")

    from fiftyone_usam.embeddings import sam_backend

    monkeypatch.setattr(sam_backend, "load_sam", no_sam)
    report = usam.refine(labelled, field="usam", out=tmp_path / "refined", device="cpu")
    assert report.corrections == {"ok": 1, "wrong": 2, "relabel": 1}
    assert report.relabelled is not None and not report.relabelled.used_sam
    assert report.relabelled.labelled == len(labelled) and report.restored == 2
    refined = load_head(tmp_path / "refined")
    assert refined.stage == "refined"
    assert refined.provenance["refinement"]["corrections"] == report.corrections
    (sample_id, confirmed) = done["ok"][0]
    after = {d["source_index"]: d for d in labelled[sample_id].usam_instances.detections}
    kept = after[confirmed["source_index"]]
    assert kept.label == confirmed.label and OK_TAG in kept.tags
    (sample_id, edited) = done["relabel"][0]
    after = {d["source_index"]: d for d in labelled[sample_id].usam_instances.detections}
    assert after[edited["source_index"]].label == new_label
    for sample_id, rejected in done["wrong"]:
        again = [
            d
            for d in labelled[sample_id].usam_instances.detections
            if d["source_index"] == rejected["source_index"]
        ]
        assert all(d.label != rejected.label for d in again)  # the rejected class never returns
    # the semantic map shows the reviewer's label where the relabelled mask is
    semantic = labelled[sample_id].usam_semantic.get_mask()
    target = {v: k for k, v in labelled.mask_targets["usam_semantic"].items()}[new_label]
    assert (semantic == target).any()
    assert not (tmp_path / "refined" / "reviewed.json").exists()


def test_a_refine_killed_while_relabelling_loses_no_review(labelled, tmp_path, monkeypatch):
    done, new_label = _review(labelled)
    from fiftyone_usam.stages import refine as stage

    real = stage.restore_corrections
    monkeypatch.setattr(stage, "restore_corrections", _raise)
    with pytest.raises(KeyboardInterrupt):
        usam.refine(labelled, out=tmp_path / "refined", device="cpu")
    assert read_corrections(labelled, "usam") == []  # the relabel cleared them ...
    assert (tmp_path / "refined" / "reviewed.json").is_file()
    monkeypatch.setattr(stage, "restore_corrections", real)
    usam.refine(labelled, out=tmp_path / "refined", device="cpu")  # ... this run puts them back
    for kind, label in (("ok", done["ok"][0][1].label), ("relabel", new_label)):
        sample_id, reviewed = done[kind][0]
        after = {d["source_index"]: d for d in labelled[sample_id].usam_instances.detections}
        assert after[reviewed["source_index"]].label == label


def _raise(*args, **kwargs):
    raise KeyboardInterrupt


def test_bad_refinements_say_what_to_do(labelled, tiny_head, tmp_path):
    with pytest.raises(ConfigError, match="no corrections on usam_instances"):
        usam.refine(labelled, out=tmp_path / "r", device="cpu")
    usam.predict(labelled, head=load_head(tiny_head), field="memory", **KEEP_ALL)  # no path
    first = labelled.first().memory_instances.detections[0]
    labelled.select_labels(ids=[first.id]).tag_labels(WRONG_TAG)
    with pytest.raises(ConfigError, match="names no head checkpoint"):
        usam.refine(labelled, field="memory", out=tmp_path / "r", device="cpu")
    _review(labelled)
    from fiftyone_usam.fiftyone_io.writer import recorded_run

    store = recorded_run(labelled, "usam")["store"]
    shutil.rmtree(f"{store}/shards")
    with pytest.raises(StoreError, match="no longer holds 2 corrected sample"):
        usam.refine(labelled, out=tmp_path / "r", device="cpu")


def test_cli_and_operator_refine(plugins_dir, labelled, tmp_path):
    import fiftyone.operators as foo

    from fiftyone_usam.cli import main

    _review(labelled)
    result = CliRunner().invoke(
        main,
        ["refine", "--dataset", labelled.name, "--out", str(tmp_path / "cli"), "--no-relabel"],
    )
    assert result.exit_code == 0, result.output
    assert "refined on 4 corrections (1 ok, 2 wrong, 1 relabel)" in result.output
    uri = f"{manifest()['name']}/refine"
    params = {"field": "usam", "out": str(tmp_path / "op"), "device": "cpu"}
    done = foo.execute_operator(uri, ctx={"dataset": labelled, "params": params})
    assert done.result["corrections"]["wrong"] == 2 and done.result["restored"] == 2
    np.testing.assert_equal((tmp_path / "op" / "head.json").is_file(), True)
