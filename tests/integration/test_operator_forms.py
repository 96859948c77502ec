"""The operators' forms as the App resolves them: wrong values are flagged before anything runs.

Each test resolves an operator's form for some values, the way the App does at every change
(``resolve_input`` on an `ExecutionContext`), and validates it as FiftyOne does before running
(`ValidationContext`): a wrong value shows its message at its property, a right one none.
"""

import json
import shutil

import pytest

from tests.fixtures.head import label, tiny_spec, write_store
from tests.integration.test_plugin import manifest


@pytest.fixture
def dataset(make_dataset, image_files):
    return make_dataset(image_files[:2])


# -- every operator ------------------------------------------------------------------------


def test_every_listed_operator_is_labelled_described_and_can_be_delegated(plugins_dir):
    import fiftyone.operators as foo

    for name in manifest()["operators"]:
        config = foo.get_operator(f"{manifest()['name']}/{name}").config
        assert config.label.startswith("U-SAM: "), name
        assert config.description and config.description.strip(), name
        assert config.allow_delegated_execution and config.dynamic, name


def test_every_form_is_titled_under_the_prefix(form, dataset):
    for name in manifest()["operators"]:
        assert form(name, dataset).prop.view.label.startswith("U-SAM: "), name


def test_forms_without_a_dataset_ask_for_one(form):
    """The operator browser works before a dataset is open: operators on one ask for it."""
    for name in manifest()["operators"]:
        errors = form(name, classes="dog").errors
        if name in ("generate", "crawl"):
            assert errors == {}, name
        else:
            assert "open a dataset in the App first" in errors[""], name


# -- class lists: generate, crawl, run -----------------------------------------------------

BAD_CLASSES = {
    "": "the class list is empty",
    "   ": "the class list is empty",
    "dog,,cat": "empty class name at position 2",
    "dog, Dog": "listed twice",
    "/nowhere/classes.yaml": "no ontology file /nowhere/classes.yaml",
}


@pytest.mark.parametrize("name", ["generate", "crawl", "run"])
@pytest.mark.parametrize("classes", list(BAD_CLASSES))
def test_a_bad_class_list_is_flagged(form, dataset, name, classes):
    errors = form(name, dataset, classes=classes, dataset="somewhere").errors
    assert BAD_CLASSES[classes] in errors["classes"]


@pytest.mark.parametrize("name", ["generate", "crawl", "run"])
def test_good_class_lists_pass(form, dataset, name, tmp_path):
    ontology = tmp_path / "classes.yaml"
    ontology.write_text("classes: [dog, {name: potted plant, synonyms: [houseplant]}]\n")
    for classes in ("dog,cat", " dog , potted plant", str(ontology)):
        assert form(name, dataset, classes=classes, dataset="somewhere").errors == {}


def test_an_invalid_ontology_file_shows_the_librarys_message(form, dataset, tmp_path):
    ontology = tmp_path / "classes.yaml"
    ontology.write_text("classes: [dog]\ncolours: [red]\n")
    errors = form("generate", dataset, classes=str(ontology), dataset="d").errors
    assert "unknown key(s) 'colours'" in errors["classes"]


# -- generate and crawl --------------------------------------------------------------------


def test_generate_checks_model_sizes_prompt_and_name(form, dataset, tmp_path):
    ok = {"classes": "dog", "dataset": "d"}
    assert form("generate", dataset, **ok, model="CompVis/stable-diffusion-v1-4").errors == {}
    errors = form("generate", dataset, **ok, model=str(tmp_path / "nowhere")).errors
    assert "no pipeline directory" in errors["model"]
    errors = form("generate", dataset, **ok, model=str(tmp_path)).errors
    assert "no model_index.json" in errors["model"]
    errors = form("generate", dataset, **ok, height=60, width=64).errors
    assert list(errors) == ["height"] and "multiple of 8" in errors["height"]
    assert "needs a {}" in form("generate", dataset, **ok, prompt="a dog").errors["prompt"]
    assert (
        "dataset name is empty"
        in form("generate", dataset, classes="dog", dataset=" ").errors["dataset"]
    )


def test_crawl_wants_an_existing_urls_file(form, dataset, tmp_path):
    ok = {"classes": "dog", "dataset": "d", "engine": "urls"}
    errors = form("crawl", dataset, **ok, urls_file=str(tmp_path / "urls.tsv")).errors
    assert "URLs file not found" in errors["urls_file"]
    (tmp_path / "urls.tsv").write_text("dog\thttp://localhost/dog.jpg\n")
    assert form("crawl", dataset, **ok, urls_file=str(tmp_path / "urls.tsv")).errors == {}


# -- embed ---------------------------------------------------------------------------------


def test_embed_checks_the_checkpoint_and_its_variant(form, dataset, tiny_checkpoint, tmp_path):
    ckpt = str(tiny_checkpoint)
    assert form("embed", dataset, sam="custom", checkpoint=ckpt).errors == {}
    # the form's default, vit_b, is not the variant described beside the checkpoint
    assert (
        "describes the checkpoint as variant 'tiny'"
        in (form("embed", dataset, checkpoint=ckpt).errors["sam"])
    )
    missing = form("embed", dataset, sam="vit_b", checkpoint=str(tmp_path / "nope.pth")).errors
    assert list(missing) == ["checkpoint"] and "SAM checkpoint not found" in missing["checkpoint"]
    assert (
        "describes the checkpoint as variant 'tiny'"
        in (form("embed", dataset, sam="vit_b", checkpoint=ckpt).errors["sam"])
    )
    bare = tmp_path / "bare.pth"
    shutil.copy(tiny_checkpoint, bare)
    assert (
        "bare.json beside its checkpoint"
        in (form("embed", dataset, sam="custom", checkpoint=str(bare)).errors["sam"])
    )
    assert "custom SAM is described by" in form("embed", dataset, sam="custom").errors["sam"]


def test_embed_refuses_a_store_of_another_kind(
    form, dataset, tiny_checkpoint, embedded_training_dataset, tmp_path
):
    _, store = embedded_training_dataset  # tiny SAM, 2x2 points
    ok = {"sam": "custom", "checkpoint": str(tiny_checkpoint), "points_per_side": 2}
    assert form("embed", dataset, **ok, store=str(store)).errors == {}
    assert form("embed", dataset, **ok, store=str(tmp_path / "new")).errors == {}
    errors = form("embed", dataset, **{**ok, "points_per_side": 10}, store=str(store)).errors
    assert "points_per_side: store has 2, asked for 10" in errors["store"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    errors = form("embed", dataset, **ok, store=str(tmp_path / "mine")).errors
    assert "is not an EmbeddingStore" in errors["store"]


def test_embed_asks_whether_to_keep_masks_and_a_store_keeps_its_kind(
    form, dataset, tiny_checkpoint, tmp_path
):
    from fiftyone_usam.embeddings.store import EmbeddingStore

    EmbeddingStore.create(tmp_path / "none", tiny_spec(2).with_masks(False))
    ok = {"sam": "custom", "checkpoint": str(tiny_checkpoint), "points_per_side": 2}
    resolved = form("embed", dataset, **ok)
    assert resolved.properties["masks"].default == "full" and resolved.errors == {}
    assert form("embed", dataset, **ok, masks="none", store=str(tmp_path / "none")).errors == {}
    errors = form("embed", dataset, **ok, masks="full", store=str(tmp_path / "none")).errors
    assert "holds no masks" in errors["store"] and "choose masks none" in errors["store"]


def test_embed_offers_the_speed_switches_as_advanced_options(form, dataset, tiny_checkpoint):
    ok = {"sam": "custom", "checkpoint": str(tiny_checkpoint), "points_per_side": 2}
    resolved = form("embed", dataset, **ok)
    attention, encoding = (resolved.properties[k] for k in ("encoder_attention", "mask_encoding"))
    assert (attention.default, encoding.default) == ("auto", "device")
    assert "advanced" in attention.view.label and "advanced" in encoding.view.label
    chosen = form("embed", dataset, **ok, encoder_attention="sdpa", mask_encoding="host")
    assert chosen.errors == {}


# -- train ---------------------------------------------------------------------------------


def test_train_needs_a_store(form, dataset, embedded_training_dataset, tmp_path):
    labelled, store = embedded_training_dataset
    assert form("train", labelled).errors == {}
    assert form("train", labelled, store=str(store)).errors == {}
    label(dataset, ["disc", "square"])
    errors = form("train", dataset).errors
    assert "U-SAM: compute SAM mask embeddings first" in errors["store"]
    errors = form("train", dataset, store=str(tmp_path / "nowhere")).errors
    assert "no EmbeddingStore at" in errors["store"]
    assert form("train", dataset, store=str(store)).errors == {}


def test_train_checks_classes_stage_and_labels(form, dataset, embedded_training_dataset, tmp_path):
    labelled, _ = embedded_training_dataset
    assert "listed twice" in form("train", labelled, classes="disc,disc").errors["classes"]
    assert form("train", labelled, classes="").errors == {}  # empty: the default order
    errors = form("train", labelled, stage="student", out=str(tmp_path / "head")).errors
    assert "stage 'student' distils from the teacher" in errors["stage"]
    assert "no fo.Classification field" in form("train", dataset).errors[""]
    assert "Invalid enum value" in form("train", labelled, label_field="nope").errors["label_field"]


# -- predict -------------------------------------------------------------------------------


def test_predict_reads_the_heads_metadata(form, dataset, tiny_head, tmp_path):
    for head in (tiny_head, tiny_head / "student", tiny_head / "teacher" / "head.json"):
        assert form("predict", dataset, head=str(head)).errors == {}, head
    missing = form("predict", dataset, head=str(tmp_path / "nowhere")).errors
    assert "no head at" in missing["head"]
    assert "no U-SAM head checkpoint" in form("predict", dataset, head=str(tmp_path)).errors["head"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "head.json").write_text("{not json")
    assert "cannot read" in form("predict", dataset, head=str(broken)).errors["head"]
    (broken / "head.json").write_text((tiny_head / "student" / "head.json").read_text())
    errors = form("predict", dataset, head=str(broken)).errors
    assert "no head.safetensors" in errors["head"]
    errors = form("predict", dataset, head=str(tiny_head / "student" / "head.safetensors")).errors
    assert errors == {}


def test_predict_checks_field_prefix_groups_and_checkpoint(form, dataset, tiny_head, tmp_path):
    head = str(tiny_head)
    errors = form("predict", dataset, head=head, field="a-b").errors
    assert "invalid field prefix" in errors["field"]
    groups = tmp_path / "groups.yaml"
    groups.write_text("classes: [disc, square]\nsuperclasses: {shapes: [disc, square]}\n")
    assert form("predict", dataset, head=head, groups=str(groups)).errors == {}
    groups.write_text("classes: [disc, ring]\nsuperclasses: {shapes: [disc]}\n")
    errors = form("predict", dataset, head=head, groups=str(groups)).errors
    assert "'square' is not in the grouping ontology" in errors["groups"]
    errors = form("predict", dataset, head=head, checkpoint=str(tmp_path / "sam.pth")).errors
    assert "SAM checkpoint not found" in errors["checkpoint"]


def test_predict_refuses_a_field_holding_other_classes(form, dataset, tiny_head):
    import fiftyone as fo

    dataset.add_sample_field("usam_semantic", fo.EmbeddedDocumentField, fo.Segmentation)
    dataset.mask_targets = {"usam_semantic": {0: "background", 1: "cat"}}
    dataset.save()
    head = str(tiny_head)
    errors = form("predict", dataset, head=head).errors
    assert "holds the classes ['cat']" in errors["field"]
    assert form("predict", dataset, head=head, overwrite=True).errors == {}
    assert form("predict", dataset, head=head, field="other").errors == {}
    subset = {"view": dataset.limit(1)._serialize(), "view_target": "CURRENT_VIEW"}
    errors = form("predict", dataset, subset, head=head, overwrite=True).errors
    assert "label the whole dataset" in errors["field"]
    dataset.mask_targets = {"usam_semantic": {0: "background", 1: "disc", 2: "square"}}
    dataset.save()
    same = form("predict", dataset, head=head)
    assert same.errors == {} and "usam_semantic" in same.shown["existing_fields"]


def test_predict_says_when_sam_will_run(
    form, dataset, tiny_head, embedded_training_dataset, tmp_path
):
    from fiftyone_usam.fiftyone_io.datasets import record_store

    labelled, _ = embedded_training_dataset
    cached = form("predict", labelled, head=str(tiny_head))
    assert cached.errors == {} and "embeddings" not in cached.shown
    bare = form("predict", dataset, head=str(tiny_head))
    assert bare.errors == {} and "No SAM embeddings are recorded" in bare.shown["embeddings"]
    assert "embeddings" not in bare.warnings()
    other = write_store(tmp_path / "other", dataset.values("id"), _zeros(2, 9), spec=tiny_spec(3))
    record_store(dataset, other)
    dataset.reload()
    mismatch = form("predict", dataset, head=str(tiny_head))
    assert mismatch.errors == {} and "embeddings" in mismatch.warnings()
    assert "not the kind this head was trained on" in mismatch.shown["embeddings"]


def test_predict_checks_a_given_store_against_the_head(
    form, dataset, tiny_head, embedded_training_dataset, tmp_path
):
    _, store = embedded_training_dataset
    head = str(tiny_head)
    assert form("predict", dataset, head=head, store=str(store)).errors == {}
    fresh = form("predict", dataset, head=head, store=str(tmp_path / "new"))
    assert fresh.errors == {} and "No EmbeddingStore at" in fresh.shown["embeddings"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    errors = form("predict", dataset, head=head, store=str(tmp_path / "mine")).errors
    assert "is not an EmbeddingStore" in errors["store"]
    other = write_store(tmp_path / "other", dataset.values("id"), _zeros(2, 9), spec=tiny_spec(3))
    errors = form("predict", dataset, head=head, store=str(other.path)).errors
    assert "points_per_side: head 2, store 3" in errors["store"]
    unknown = tmp_path / "unknown"
    shutil.copytree(tiny_head / "student", unknown)
    metadata = json.loads((unknown / "head.json").read_text())
    (unknown / "head.json").write_text(json.dumps({**metadata, "store_spec": None}))
    errors = form("predict", dataset, head=str(unknown)).errors
    assert "arrays of unknown origin" in errors["store"]
    assert form("predict", dataset, head=str(unknown), store=str(store)).errors == {}


def test_stores_without_masks_train_but_do_not_label(
    form, dataset, tiny_head, embedded_training_dataset, tmp_path
):
    from fiftyone_usam.embeddings.store import EmbeddingStore
    from fiftyone_usam.fiftyone_io.datasets import record_store

    _, store = embedded_training_dataset
    bare = EmbeddingStore.create(
        tmp_path / "bare", EmbeddingStore.open(store).spec.with_masks(False)
    )
    errors = form("predict", dataset, head=str(tiny_head), store=str(bare.path)).errors
    assert "holds no masks" in errors["store"] and "leave the store empty" in errors["store"]
    label(dataset, ["disc", "square"])
    record_store(dataset, bare)  # the only store recorded: enough for training
    dataset.reload()
    assert form("train", dataset).errors == {}


# -- evaluate ------------------------------------------------------------------------------


def test_evaluate_checks_fields_and_the_evaluation_key(form, dataset):
    import fiftyone as fo
    import numpy as np

    assert "has no predictions" in form("evaluate", dataset).errors[""]
    for sample in dataset:
        sample["pred"] = fo.Segmentation(mask=np.ones((4, 4), np.uint8))
        sample["truth"] = fo.Segmentation(mask=np.ones((4, 4), np.uint8))
        sample.save()
    ok = {"pred_field": "pred", "gt_field": "truth"}
    assert form("evaluate", dataset, **ok).errors == {}
    errors = form("evaluate", dataset, pred_field="pred", gt_field="pred").errors
    assert "the same field" in errors["gt_field"]
    errors = form("evaluate", dataset, **ok, eval_key="my key").errors
    assert "invalid evaluation key" in errors["eval_key"]
    dataset.evaluate_segmentations("pred", gt_field="truth", eval_key="pred_eval")
    errors = form("evaluate", dataset, **ok).errors
    assert "already has the evaluation 'pred_eval'" in errors["eval_key"]
    assert form("evaluate", dataset, **ok, overwrite=True).errors == {}
    assert form("evaluate", dataset, **ok, eval_key="again").errors == {}
    assert (
        "Invalid enum value"
        in form("evaluate", dataset, **{**ok, "gt_field": "x"}).errors["gt_field"]
    )


# -- run -----------------------------------------------------------------------------------


def test_run_shows_the_inputs_of_its_source(form, dataset, tmp_path):
    synthetic = form("run", dataset, classes="dog").properties
    assert "model" in synthetic and "crawl_engine" not in synthetic
    crawl = form("run", dataset, classes="dog", source="crawl").properties
    assert "crawl_engine" in crawl and "model" not in crawl and "urls_file" not in crawl
    urls = form("run", dataset, classes="dog", source="crawl", crawl_engine="urls")
    assert urls.errors == {"urls_file": "Required property"}
    (tmp_path / "urls.tsv").write_text("dog\thttp://localhost/dog.jpg\n")
    urls_file = str(tmp_path / "urls.tsv")
    urls = form(
        "run", dataset, classes="dog", source="crawl", crawl_engine="urls", urls_file=urls_file
    )
    assert urls.errors == {}
    missing = form(
        "run", dataset, classes="dog", source="crawl", crawl_engine="urls", urls_file="/no/urls.tsv"
    )
    assert "URLs file not found" in missing.errors["urls_file"]


def test_run_checks_sam_model_and_output_fields(form, dataset, tiny_checkpoint, tmp_path):
    import fiftyone as fo

    ok = {"classes": "disc,square", "checkpoint": str(tiny_checkpoint)}
    assert form("run", dataset, **ok).errors == {}
    assert form("run", dataset, **ok).properties["training_masks"].default == "none"
    errors = form("run", dataset, **{**ok, "checkpoint": str(tmp_path / "x.pth")}).errors
    assert "SAM checkpoint not found" in errors["checkpoint"]
    errors = form("run", dataset, **ok, sam="vit_h").errors
    assert "variant 'tiny'" in errors["sam"] and "choose no variant" in errors["sam"]
    errors = form("run", dataset, **ok, model=str(tmp_path / "sd")).errors
    assert "no pipeline directory" in errors["model"]
    assert "invalid field prefix" in form("run", dataset, **ok, field="u sam").errors["field"]
    dataset.add_sample_field("usam_semantic", fo.EmbeddedDocumentField, fo.Segmentation)
    dataset.mask_targets = {"usam_semantic": {0: "background", 1: "cat"}}
    dataset.save()
    clash = form("run", dataset, **ok)
    assert clash.errors == {} and "existing_fields" in clash.warnings()
    assert "holds the classes ['cat']" in clash.shown["existing_fields"]
    assert form("run", dataset, **ok, overwrite=True).errors == {}
    subset = {"view": dataset.limit(1)._serialize(), "view_target": "CURRENT_VIEW"}
    errors = form("run", dataset, subset, **ok, overwrite=True).errors
    assert "label the whole dataset" in errors["field"]
    dataset.mask_targets = {"usam_semantic": {0: "background", 1: "shapes"}}
    dataset.save()
    ontology = tmp_path / "shapes.yaml"
    ontology.write_text("classes: [disc, square]\nsuperclasses: {shapes: [disc, square]}\n")
    grouped = {**ok, "classes": str(ontology), "overwrite": True}
    assert form("run", dataset, subset, **grouped, superclasses=True).errors == {}
    assert "field" in form("run", dataset, subset, **grouped).errors


def _zeros(n, d):
    import numpy as np

    return np.zeros((n, d, 1024), np.float32)
