"""Plugins: the example package is installed, discovered through the entry point, and used end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mibench import method_registry
from mibench.cli import main
from mibench.data import registry as task_registry
from mibench.errors import UnknownNameError
from mibench.method_registry import register_method
from mibench.plugins import PluginError, plugin_sources

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mibench-example-plugin"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """pip-install the example plugin into a folder on sys.path (offline: no build isolation, no deps)."""
    target = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(EXAMPLE)], check=True)
    sys.path.insert(0, str(target))
    method_registry.clear_cache()
    task_registry.clear_cache()
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("mibench_example_plugin")]:
        del sys.modules[name]
    method_registry.clear_cache()
    task_registry.clear_cache()


def test_plugin_is_discovered_and_namespaced(installed_plugin, capsys):
    assert [p.namespace for p in plugin_sources()] == ["example"]
    assert main(["ls", "methods"]) == 0
    assert "example:eap-cf-gradient" in capsys.readouterr().out
    card = method_registry.get_method_card("example:eap-cf-gradient")
    assert card.levels == ["edge"]
    with pytest.raises(UnknownNameError, match="example:eap-cf-gradient"):
        method_registry.get_method_card("example:eap-cf-gradiant")
    task = task_registry.load_task("example:copy-name")
    examples = task.examples("test")
    assert len(examples) == 10 and examples == task.examples("test")
    assert {e.template + e.variables["name"] for e in examples}.isdisjoint(
        {e.template + e.variables["name"] for e in task.examples("train")})


def test_plugin_method_runs_through_evaluate(installed_plugin, random_task_model, tmp_path):
    status = main(["evaluate", "--method", "example:eap-cf-gradient", "--task", "ioi", "--model",
                   str(random_task_model), "--limit", "16", "--attribution-examples", "8", "--bootstrap", "20",
                   "--output-dir", str(tmp_path), "--quiet", "--no-baseline"])
    assert status == 0
    assert list(tmp_path.rglob("example_eap-cf-gradient_edge_patching_test_seed0/record.json"))


def test_plugin_featurizer_runs_through_the_causal_track_and_its_saved_files_reload(installed_plugin, tmp_path,
                                                                                     capsys):
    """A third party's featurizer class: trained-free method, saved as safetensors + a card naming the
    registered class, and re-scored in a process that has not imported the plugin's code yet."""
    from mibench.causal import featurizer as featurizer_module
    from mibench.results.causal_record import read_causal_record

    common = ["--task", "mcqa", "--variable", "answer_pointer", "--model", "gpt2-tasks", "--layers", "1",
              "--limit", "24", "--train-examples", "24", "--bootstrap", "20", "--quiet"]
    assert main(["evaluate", "--track", "causal", "--method", "example:random-subspace",
                 "--method-arg", "n_features=8", "--output-dir", str(tmp_path / "runs"), *common]) == 0
    (record_file,) = (tmp_path / "runs").rglob("record.json")
    record = read_causal_record(record_file)
    assert record.method.arguments == {"n_features": 8, "seed": 0} and {s.n_features for s in record.sites} == {8}
    card = (record_file.parent / "featurizers" / "L1_END.json").read_text()
    assert '"class": "example:random-basis"' in card
    capsys.readouterr()

    featurizer_module.FEATURIZERS.forget("example:random-basis")  # as in a fresh process
    method_registry.METHODS.forget("example:random-subspace")
    for name in [m for m in sys.modules if m.startswith("mibench_example_plugin.random_subspace")]:
        del sys.modules[name]
    assert main(["score", "--track", "causal", str(record_file.parent / "featurizers"),
                 "--output-dir", str(tmp_path / "rescored"), *common]) == 0
    (again,) = (tmp_path / "rescored").rglob("record.json")
    assert [s.iia for s in read_causal_record(again).sites] == [s.iia for s in record.sites]


def test_plugins_cannot_register_builtin_names():
    class Impostor:  # defined in a test module, i.e. outside mibench
        pass

    with pytest.raises(PluginError, match="without a namespace"):
        register_method("eap")(Impostor)


def test_reserved_or_malformed_namespaces_are_refused(monkeypatch):
    from importlib import metadata

    class FakeEntry:
        name, value, dist = "mibench", "somewhere", None

    monkeypatch.setattr(metadata, "entry_points", lambda group: [FakeEntry()])
    with pytest.raises(PluginError, match="mibench"):
        plugin_sources()


@pytest.mark.slow
def test_newcomer_flow_from_plugin_to_leaderboard(installed_plugin, tmp_path, capsys):
    """CONTRIBUTING.md steps 2-4 as a newcomer runs them, on the embedded models: evaluate the plugin's
    method, submit it by card, check the submission, score it into records, rebuild the leaderboard."""
    import yaml

    method = "example:eap-cf-gradient"
    assert main(["evaluate", "--method", method, "--task", "ioi", "--limit", "16", "--attribution-examples", "8",
                 "--bootstrap", "20", "--output-dir", str(tmp_path / "own-runs"), "--quiet"]) == 0
    folder = tmp_path / "submissions" / "cf-gradient"
    folder.mkdir(parents=True)
    card = {"method": "CF-gradient EAP", "authors": ["A. Person"], "paper": None, "license": "MIT",
            "contact": "a.person@example.org", "track": "circuit", "contains": "plugin",
            "models": ["gpt2-tasks", "llama-tasks"], "tasks": ["ioi", "mcqa"],
            "plugin": {"distribution": "mibench-example-plugin", "method": method}}
    (folder / "submission.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    assert main(["submission", "check", str(folder)]) == 0
    assert f"{folder}: ok" in capsys.readouterr().out

    records = tmp_path / "leaderboard" / "records"
    assert main(["submission", "evaluate", str(folder), "--output-dir", str(records), "--bootstrap", "50",
                 "--quiet"]) == 0
    assert len(list(records.rglob("record.json"))) == 4
    site = tmp_path / "leaderboard"
    assert main(["leaderboard", "build", "--records", str(records), "--out", str(site)]) == 0
    table = (site / "leaderboard.md").read_text()
    ranked = table.split("## Not ranked")[0]
    rows = [line for line in ranked.splitlines() if line.startswith(f"| {method} |")]
    assert len(rows) == 2  # one row in the CPR table and one in the CMD table
    for row in rows:  # position-invariant, and a value in every (task, model) column
        positions, *cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert positions == "invariant" and len(cells) == 4 and all(cells), row
    assert main(["leaderboard", "build", "--records", str(records), "--out", str(site), "--check"]) == 0
