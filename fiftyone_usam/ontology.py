"""The user's classes: names, prompts, search synonyms and superclass groupings.

An ontology comes from a comma-separated list (``"person,dog,potted plant"``) or a YAML file::

    prompt: "a photo of a {}"          # default prompt; {} is the class name
    classes:
      - dog                            # a plain name
      - name: potted plant
        prompts: ["a photo of a potted plant", "a potted plant on a windowsill"]
        synonyms: [houseplant]         # extra web-search queries
        negative_prompt: "cartoon, drawing"
        superclass: household items
    superclasses:                      # optional; the same as per-class `superclass`
      animals: [dog]

Class order is the order given; class ``i`` has label id ``i + 1`` (0 is background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fiftyone_usam.config import config_from_dict, config_to_dict
from fiftyone_usam.errors import ConfigError

BACKGROUND = "background"  # the name of label id 0, in every mask_targets we write


def label_name(label: int, classes: Sequence[str]) -> str:
    """The class name of label id ``label`` (0: background, ``i``: ``classes[i - 1]``)."""
    return BACKGROUND if label == 0 else classes[label - 1]


DEFAULT_PROMPT = "a photo of a {}"


@dataclass(frozen=True)
class ClassSpec:
    """One class.

    Attributes:
        name: the class name, as it appears in labels.
        prompts: text-to-image prompts; empty means the ontology's default prompt.
        synonyms: extra queries for web search, besides the name.
        negative_prompt: what image generation should avoid.
        superclass: the group this class belongs to, if any.
    """

    name: str
    prompts: tuple[str, ...] = ()
    synonyms: tuple[str, ...] = ()
    negative_prompt: str | None = None
    superclass: str | None = None


@dataclass(frozen=True)
class Ontology:
    """An ordered list of classes with their prompts and groupings."""

    classes: tuple[ClassSpec, ...]
    prompt: str = DEFAULT_PROMPT
    _by_name: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("the class list is empty: name at least one class")
        seen: dict[str, str] = {}
        for position, spec in enumerate(self.classes, start=1):
            name = spec.name
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"class {position} has an empty name: every class needs a name")
            if name != name.strip():
                raise ConfigError(f"class name {name!r} has leading or trailing spaces")
            key = name.casefold()
            if key in seen:
                raise ConfigError(
                    f"class {name!r} is listed twice (as {seen[key]!r} too): names must be unique"
                )
            seen[key] = name
            if spec.superclass is not None and not spec.superclass.strip():
                raise ConfigError(f"class {name!r} has an empty superclass")
        if "{}" not in self.prompt:
            raise ConfigError(f"the default prompt {self.prompt!r} needs a {{}} for the class name")
        object.__setattr__(self, "_by_name", {s.name: i for i, s in enumerate(self.classes)})

    @property
    def names(self) -> tuple[str, ...]:
        """Class names in order."""
        return tuple(spec.name for spec in self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def index(self, name: str) -> int:
        """Position of a class (0-based; its label id is ``index + 1``)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(
                f"class {name!r} is not in the ontology ({', '.join(self.names)})"
            ) from None

    def spec(self, name: str) -> ClassSpec:
        """The `ClassSpec` of a class."""
        return self.classes[self.index(name)]

    def prompts_for(self, name: str) -> tuple[str, ...]:
        """Text-to-image prompts of a class (its own, else the default prompt filled in)."""
        spec = self.spec(name)
        return spec.prompts or (self.prompt.format(spec.name),)

    def queries_for(self, name: str) -> tuple[str, ...]:
        """Web-search queries of a class: its name, then its synonyms."""
        spec = self.spec(name)
        return (spec.name, *spec.synonyms)

    def superclasses(self) -> dict[str, tuple[str, ...]]:
        """Superclass -> its classes, in class order (classes without one are left out)."""
        groups: dict[str, list[str]] = {}
        for spec in self.classes:
            if spec.superclass is not None:
                groups.setdefault(spec.superclass, []).append(spec.name)
        return {k: tuple(v) for k, v in groups.items()}

    def group_of(self, classes: Sequence[str]) -> dict[str, str]:
        """Each of ``classes`` -> its superclass (itself if it has none), in the given order.

        Raises:
            ConfigError: a class this ontology does not know.
        """
        out = {}
        for name in classes:
            if name not in self:
                raise ConfigError(
                    f"the head's class {name!r} is not in the grouping ontology "
                    f"({', '.join(self.names)})"
                )
            out[name] = self.spec(name).superclass or name
        return out

    def to_superclasses(self) -> Ontology:
        """The ontology of the superclasses (classes without a superclass stay themselves)."""
        order: list[str] = []
        for spec in self.classes:
            group = spec.superclass or spec.name
            if group not in order:
                order.append(group)
        return Ontology(tuple(ClassSpec(name) for name in order), prompt=self.prompt)

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-serialisable form that `ontology_from_dict` reads back."""
        return {"prompt": self.prompt, "classes": [config_to_dict(s) for s in self.classes]}

    def save(self, path: str | Path) -> None:
        """Writes the ontology as YAML."""
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def parse_classes(text: str) -> Ontology:
    """An ontology from a comma-separated list such as ``"person,dog,potted plant"``."""
    if not text.strip():
        raise ConfigError(
            f"the class list is empty (empty class name at position 1 in {text!r}): name at "
            "least one class, separating names with commas"
        )
    parts = text.split(",")
    for position, part in enumerate(parts, start=1):
        if not part.strip():
            raise ConfigError(
                f"empty class name at position {position} in {text!r}: "
                "separate class names with single commas"
            )
    return Ontology(tuple(ClassSpec(part.strip()) for part in parts))


def ontology_from_dict(data: Mapping[str, Any], *, source: str = "ontology") -> Ontology:
    """Reads the YAML structure described in the module docstring (unknown keys are errors)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'classes' list")
    unknown = sorted(set(data) - {"prompt", "classes", "superclasses"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
            "use prompt, classes, superclasses"
        )
    raw = data.get("classes")
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'classes' must be a list of names or mappings")
    specs = [_class_spec(entry, source) for entry in raw]
    specs = _apply_superclasses(specs, data.get("superclasses") or {}, source)
    return Ontology(tuple(specs), prompt=data.get("prompt") or DEFAULT_PROMPT)


def load_ontology(source: str | Path | Sequence[str] | Ontology) -> Ontology:
    """An ontology from a YAML file, a comma-separated string, a list of names, or itself."""
    if isinstance(source, Ontology):
        return source
    if isinstance(source, Path) or (
        isinstance(source, str) and source.lower().endswith((".yaml", ".yml", ".json"))
    ):
        return _read_file(Path(source))
    if isinstance(source, str):
        return parse_classes(source)
    names = list(source)
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise ConfigError(
            f"class names must be strings, got {', '.join(repr(w) for w in wrong)} in "
            f"{names!r}: quote them (e.g. '5' if a class is really called 5)"
        )
    return Ontology(tuple(ClassSpec(name) for name in names))


def _read_file(path: Path) -> Ontology:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"cannot read ontology file {path}: no ontology file {path} exists here; give an "
            "existing YAML file, or the class names separated by commas"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read ontology file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    return ontology_from_dict(data, source=str(path))


def _class_spec(entry: Any, source: str) -> ClassSpec:
    if isinstance(entry, str):
        return ClassSpec(entry)
    if isinstance(entry, Mapping):
        entry = dict(entry)
        if isinstance(entry.get("prompts"), str):
            entry["prompts"] = [entry["prompts"]]
        if isinstance(entry.get("synonyms"), str):
            entry["synonyms"] = [entry["synonyms"]]
        return config_from_dict(ClassSpec, entry, source=f"{source} ({entry.get('name', '?')})")
    raise ConfigError(f"{source}: a class must be a name or a mapping, got {entry!r}")


def _apply_superclasses(
    specs: list[ClassSpec], groups: Mapping[str, Sequence[str]], source: str
) -> list[ClassSpec]:
    if not isinstance(groups, Mapping):
        raise ConfigError(f"{source}: 'superclasses' must map a group name to its classes")
    names = {spec.name: i for i, spec in enumerate(specs)}
    for group, members in groups.items():
        for member in members:
            if member not in names:
                raise ConfigError(
                    f"{source}: superclass {group!r} lists {member!r}, which is not a class"
                )
            spec = specs[names[member]]
            if spec.superclass not in (None, group):
                raise ConfigError(
                    f"{source}: class {member!r} is in superclass {spec.superclass!r} "
                    f"and in {group!r}: a class belongs to one superclass"
                )
            specs[names[member]] = replace(spec, superclass=group)
    return specs
