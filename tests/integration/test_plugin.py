"""The repository is a FiftyOne plugin: FiftyOne's own discovery finds it and every operator."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def manifest():
    return yaml.safe_load((REPO / "fiftyone.yml").read_text())


def test_fiftyone_discovers_the_plugin_and_every_listed_operator(plugins_dir):
    import fiftyone.operators as foo
    import fiftyone.plugins as fop

    name = manifest()["name"]
    plugin = next(p for p in fop.list_plugins() if p.name == name)
    assert Path(plugin.directory).resolve() == REPO
    found = {op.uri for op in foo.list_operators(type="operator") if op.plugin_name == name}
    listed = {f"{name}/{op}" for op in manifest()["operators"]}
    assert listed and found == listed


def test_operators_have_labels_under_a_common_prefix(plugins_dir):
    import fiftyone.operators as foo

    name = manifest()["name"]
    for op in foo.list_operators(type="operator"):
        if op.plugin_name == name:
            assert op.config.label.startswith("U-SAM: ")
            assert op.config.description


def test_importing_the_plugin_entry_stays_light():
    """FiftyOne imports the entry at every registry build: it must not pull in torch or ray."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('usam_plugin',"
        f" {str(REPO / 'operators' / '__init__.py')!r},"
        f" submodule_search_locations=[{str(REPO / 'operators')!r}])\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['usam_plugin'] = module\n"
        "spec.loader.exec_module(module)\n"
        "import fiftyone_usam\n"
        "print('torch' in sys.modules, 'segment_anything' in sys.modules, 'ray' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-3:] == ["False", "False", "False"]
