import pytest

from fiftyone_usam.errors import ConfigError
from fiftyone_usam.ontology import ClassSpec, Ontology, load_ontology, parse_classes

YAML = """
prompt: "a photograph of a {}"
classes:
  - dog
  - name: potted plant
    prompts: ["a potted plant on a windowsill", "a potted plant"]
    synonyms: houseplant
    negative_prompt: cartoon
  - name: cat
    superclass: animals
superclasses:
  animals: [dog]
  household items: [potted plant]
"""


def test_comma_separated_classes_keep_their_order():
    ontology = parse_classes("person, dog ,potted plant")
    assert ontology.names == ("person", "dog", "potted plant")
    assert ontology.index("dog") == 1 and "dog" in ontology and len(ontology) == 3
    assert ontology.prompts_for("potted plant") == ("a photo of a potted plant",)
    assert ontology.queries_for("dog") == ("dog",)


@pytest.mark.parametrize(
    "text, message",
    [
        ("person,,dog", "empty class name at position 2"),
        ("person, ", "empty class name at position 2"),
        ("", "empty class name at position 1"),
        ("dog,cat,Dog", "'Dog' is listed twice"),
    ],
)
def test_bad_class_lists_are_clear_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_classes(text)


def test_yaml_ontology(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text(YAML)
    ontology = load_ontology(path)
    assert ontology.names == ("dog", "potted plant", "cat")
    assert ontology.prompts_for("dog") == ("a photograph of a dog",)
    assert ontology.prompts_for("potted plant") == (
        "a potted plant on a windowsill",
        "a potted plant",
    )
    assert ontology.queries_for("potted plant") == ("potted plant", "houseplant")
    assert ontology.spec("potted plant").negative_prompt == "cartoon"
    assert ontology.superclasses() == {
        "animals": ("dog", "cat"),
        "household items": ("potted plant",),
    }
    assert ontology.to_superclasses().names == ("animals", "household items")
    assert load_ontology(str(path)) == ontology


def test_round_trip_through_yaml(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text(YAML)
    ontology = load_ontology(path)
    ontology.save(tmp_path / "again.yaml")
    assert load_ontology(tmp_path / "again.yaml") == ontology


@pytest.mark.parametrize(
    "text, message",
    [
        ("classes: [dog, {name: cat, colour: red}]", "unknown setting.*'colour'"),
        ("classes: [dog]\nextra: 1", "unknown key.*'extra'"),
        ("classes: dog", "'classes' must be a list"),
        ("classes: [dog]\nsuperclasses: {animals: [cow]}", "lists 'cow', which is not a class"),
        (
            "classes: [{name: dog, superclass: pets}]\nsuperclasses: {animals: [dog]}",
            "belongs to one superclass",
        ),
        ("classes: [dog]\nprompt: a photo", "needs a \\{\\} for the class name"),
        ("classes: []", "the class list is empty"),
        ("classes: ['  ']", "class 1 has an empty name"),
    ],
)
def test_bad_yaml_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "o.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_ontology(path)


def test_unknown_class_lookup_lists_classes():
    with pytest.raises(ConfigError, match=r"'cow' is not in the ontology \(dog, cat\)"):
        load_ontology(["dog", "cat"]).index("cow")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read ontology file"):
        load_ontology(tmp_path / "none.yaml")


def test_ontology_is_hashable_and_comparable():
    a = Ontology((ClassSpec("dog"), ClassSpec("cat")))
    assert a == load_ontology("dog,cat") and hash(a) == hash(load_ontology(["dog", "cat"]))
