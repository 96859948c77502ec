"""`adapt` on a dataset: view stores, the adapted head, its run record, the CLI and operator."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import fiftyone_usam as usam
from fiftyone_usam.embeddings.store import EmbeddingStore, StoreSpec
from fiftyone_usam.embeddings.views import grid_flip_permutation
from fiftyone_usam.errors import ConfigError, StoreError
from fiftyone_usam.fiftyone_io.writer import recorded_run
from fiftyone_usam.head.checkpoint import load_head
from tests.integration.test_pipeline import options  # noqa: F401 (a fixture)
from tests.integration.test_plugin import manifest

CPU = {"device": "cpu"}


@pytest.fixture
def target(make_dataset, image_files, tmp_path):
    """Ten images: the six test images, three again, and the first one mirrored."""
    folder = tmp_path / "target"
    folder.mkdir()
    paths = []
    for i in range(9):
        source = image_files[i % len(image_files)]
        paths.append(folder / f"{i}_{source.stem}.png")
        Image.open(source).convert("RGB").save(paths[-1])
    mirrored = folder / "mirrored.png"
    Image.fromarray(np.asarray(Image.open(paths[0]))[:, ::-1].copy()).save(mirrored)
    return make_dataset([*paths, mirrored])


def test_a_hflip_view_store_lines_up_with_the_original_grid(target, tiny_head, tiny_checkpoint):
    points = load_head(tiny_head).store_spec.points_per_side
    grid = usam.embed(target, checkpoint=tiny_checkpoint, points_per_side=points, **CPU)
    view = usam.embed(
        target, checkpoint=tiny_checkpoint, points_per_side=points, view="hflip", **CPU
    )
    assert view.spec.view == "hflip" and not view.spec.has_masks
    assert view.store.name.endswith("-view-hflip") and view.store != grid.store
    first, mirrored = target.values("id")[0], target.values("id")[-1]
    # the view of image A, row i, is A's mirror image at grid point i: the mirrored file's
    # grid point perm[i] (the same pixels, the grid mirrored onto itself)
    from_view = EmbeddingStore.open(view.store).get(first)
    from_file = EmbeddingStore.open(grid.store).get(mirrored)
    perm = grid_flip_permutation(points)
    np.testing.assert_allclose(from_view.embeddings, from_file.embeddings[perm], atol=2e-3)
    np.testing.assert_allclose(from_view.points, EmbeddingStore.open(grid.store).get(first).points)
    with pytest.raises(ConfigError, match="unknown view 'vflip'"):
        usam.embed(target, checkpoint=tiny_checkpoint, view="vflip", **CPU)


def test_adapt_writes_an_adapted_head_that_labels_and_is_recorded(
    target, tiny_head, tiny_checkpoint, tmp_path
):
    report = usam.adapt(
        target, head=tiny_head, out=tmp_path / "adapted", view="hflip", checkpoint=tiny_checkpoint,
        **CPU,
    )  # fmt: skip
    assert report.images == 10 and report.view == "hflip" and report.used_sam
    assert report.before.num_masks == report.after.num_masks == 10 * report.before.num_masks // 10
    assert "before:" in report.summary() and "after:" in report.summary()
    adapted = load_head(tmp_path / "adapted")
    assert adapted.stage == "adapted" and adapted.classes == load_head(tiny_head).classes
    made = adapted.provenance["adaptation"]
    assert made["dataset"] == target.name and made["view"] == "hflip" and made["views"]
    assert made["num_images"] == 10
    # labelled from the cached target store, the run record says it was adapted and on what
    labels = usam.predict(target, head=tmp_path / "adapted", threshold=0.0, **CPU)
    assert labels.labelled == 10 and not labels.used_sam
    run = recorded_run(target, "usam")
    assert run["head_stage"] == "adapted" and run["adaptation"]["dataset"] == target.name
    assert run["adaptation"]["view"] == "hflip"
    assert set(run["adaptation"]["ingredients"]) == {
        "target_statistics",
        "pseudo_labels",
        "consistency",
        "anchor",
    }
    # a second adaptation reads both stores: SAM is not run
    again = usam.adapt(target, head=tiny_head, out=tmp_path / "again", view="hflip", **CPU)
    assert not again.used_sam
    np.testing.assert_array_equal(  # deterministic for a seed
        load_head(tmp_path / "again").model.input_mean.numpy(), adapted.model.input_mean.numpy()
    )


def test_bad_adaptations_are_refused_with_what_to_do(
    target, make_dataset, image_files, tiny_head, tiny_checkpoint, tmp_path
):
    few = make_dataset(image_files[:3])
    with pytest.raises(ConfigError, match="at least 8 target images, got 3"):
        usam.adapt(few, head=tiny_head, out=tmp_path / "a", checkpoint=tiny_checkpoint, **CPU)
    with pytest.raises(ConfigError, match="unknown ingredient"):
        usam.adapt(target, head=tiny_head, out=tmp_path / "a", ingredients=["magic"], **CPU)
    spec = load_head(tiny_head).store_spec
    other = StoreSpec(spec.sam_variant, spec.checkpoint_sha256, spec.points_per_side + 1, 256)
    EmbeddingStore.create(tmp_path / "other-grid", other.with_view("hflip"))
    with pytest.raises(StoreError, match="does not hold the hflip view"):
        usam.adapt(
            target, head=tiny_head, out=tmp_path / "a", view="hflip",
            view_store=tmp_path / "other-grid", checkpoint=tiny_checkpoint, **CPU,
        )  # fmt: skip
    assert not (tmp_path / "a").exists()


def test_cli_and_operator_adapt(plugins_dir, target, tiny_head, tiny_checkpoint, tmp_path):
    import fiftyone.operators as foo

    from fiftyone_usam.cli import main

    result = CliRunner().invoke(
        main,
        [
            "adapt", "--dataset", target.name, "--head", str(tiny_head), "--out",
            str(tmp_path / "cli"), "--view", "scale:0.75", "--ingredients",
            "target_statistics,pseudo_labels", "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "adapted on 10 images, view scale:0.75" in result.output
    made = load_head(tmp_path / "cli").provenance["adaptation"]["config"]
    assert made["pseudo_labels"] and not made["consistency"] and not made["anchor"]
    params = {"head": str(tiny_head), "out": str(tmp_path / "op"), "view": "none", "device": "cpu"}
    uri = f"{manifest()['name']}/adapt"
    done = foo.execute_operator(uri, ctx={"dataset": target, "params": params})
    assert done.result["images"] == 10 and (tmp_path / "op" / "head.json").is_file()


def test_run_with_adapt_labels_with_the_adapted_head(target, options):  # noqa: F811
    from fiftyone_usam.stages.pipeline import run

    settings = {**options, "gt_field": None}
    report = run("disc,square", dataset=target.name, adapt=True, **settings)
    adapt_stage = report.stage("adapt")
    assert adapt_stage.status == "ran" and "adapted on 10 images, view hflip" in adapt_stage.detail
    assert report.adapted is not None and report.adapted.parent == report.head
    assert load_head(report.adapted).stage == "adapted"
    assert recorded_run(target, "usam")["head"] == str(report.adapted.resolve())
    assert recorded_run(target, "usam")["head_stage"] == "adapted"
    assert len(target.exists("usam_semantic")) == 10
    again = run("disc,square", dataset=target.name, adapt=True, **settings)
    assert again.stage("adapt").status == "skipped" and again.stage("predict").status == "skipped"
    assert "adapt" not in {
        s.name for s in run("disc,square", dataset=target.name, **settings).stages
    }
