"""Which class lists a dataset accepts after its first run (pure)."""

import pytest

from fiftyone_usam.fiftyone_io.training_dataset import OntologyMismatchError, merge_ontologies
from fiftyone_usam.ontology import load_ontology, ontology_from_dict


def test_a_new_dataset_takes_the_runs_ontology():
    run = load_ontology("dog,cat")
    assert merge_ontologies(None, run) is run


@pytest.mark.parametrize(
    ("stored", "run", "merged"),
    [
        ("dog,cat", "dog,cat", ("dog", "cat")),
        ("dog,cat", "dog", ("dog", "cat")),  # the first classes only
        ("dog,cat", "dog,cat,horse", ("dog", "cat", "horse")),  # new classes appended
    ],
)
def test_compatible_class_lists(stored, run, merged):
    assert merge_ontologies(load_ontology(stored), load_ontology(run)).names == merged


@pytest.mark.parametrize("run", ["cat,dog", "cat", "dog,horse", "Dog,cat", "dog,cats"])
def test_other_class_lists_are_refused(run):
    with pytest.raises(OntologyMismatchError, match=r"built for the classes \[dog, cat\]"):
        merge_ontologies(load_ontology("dog,cat"), load_ontology(run), "mine")


def test_the_run_updates_the_classes_it_names():
    stored = ontology_from_dict({"classes": ["dog", {"name": "cat", "synonyms": ["kitten"]}]})
    run = ontology_from_dict(
        {"prompt": "a {} photo", "classes": [{"name": "dog", "prompts": ["a dog"]}]}
    )
    merged = merge_ontologies(stored, run)
    assert merged.prompts_for("dog") == ("a dog",)
    assert merged.queries_for("cat") == ("cat", "kitten")
    assert merged.prompt == "a {} photo"
