import json
from dataclasses import dataclass

import pytest

from fiftyone_usam.config import config_from_dict, config_to_dict, load_config
from fiftyone_usam.errors import ConfigError


@dataclass(frozen=True)
class Example:
    name: str
    sizes: tuple[int, ...]
    scale: float = 1.0
    note: str | None = None


def test_round_trip_turns_lists_back_into_tuples(tmp_path):
    config = Example("a", (1, 2, 3), 0.5)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config_to_dict(config)))
    assert load_config(Example, path) == config


def test_unknown_keys_are_errors_that_list_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown setting\(s\) 'sclae'.*valid settings are: name, note, scale, sizes",
    ):
        config_from_dict(Example, {"name": "a", "sizes": [1], "sclae": 2})


def test_missing_required_key_is_an_error():
    with pytest.raises(ConfigError, match=r"sizes"):
        config_from_dict(Example, {"name": "a"})


def test_yaml_files_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: b\nsizes: [4, 5]\n")
    assert load_config(Example, path) == Example("b", (4, 5))


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read config file"):
        load_config(Example, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"not valid JSON"):
        load_config(Example, bad)
