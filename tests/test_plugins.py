"""Plugins: the example package is installed, discovered through the entry point, and used end to end."""

from __future__ import annotations

import json
import os
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
    written = sorted(records.rglob("record.json"))
    assert len(written) == 4
    for path in written:  # named after the submission, stamped with the plugin that produced it
        stamped = json.loads(path.read_text())["method"]
        assert stamped["id"] == "submission:cf-gradient"
        assert stamped["plugin"] == {"distribution": "mibench-example-plugin", "version": "0.1.0", "method": method}
    site = tmp_path / "leaderboard"
    assert main(["leaderboard", "build", "--records", str(records), "--out", str(site)]) == 0
    table = (site / "leaderboard.md").read_text()
    ranked = table.split("## Not ranked")[0]
    rows = [line for line in ranked.splitlines() if line.startswith("| submission:cf-gradient |")]
    assert len(rows) == 2  # one row in the CPR table and one in the CMD table
    for row in rows:  # position-invariant, and a value in every (task, model) column
        positions, *cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert positions == "invariant" and len(cells) == 4 and all(cells), row
    assert main(["leaderboard", "build", "--records", str(records), "--out", str(site), "--check"]) == 0


# ------------------------------------------------------------------------ installing as users install
CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"
OFFLINE_INSTALL = "python -m pip install --no-build-isolation ./my-mib-method"


def test_contributing_shows_the_example_plugins_complete_pyproject():
    text = CONTRIBUTING.read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert block == (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")
    assert "[project]" in block and '[tool.setuptools.package-data]\n"*" = ["*.yaml"]' in block
    assert f"`{OFFLINE_INSTALL}`" in text


def _fresh_venv(root: Path) -> Path:
    """A new virtual environment that sees this one's packages (torch, mibench) through a site directory
    added by a .pth file, but installs into its own site-packages: a clean place for a normal install."""
    import site
    import venv

    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(own, "zz_parent_env.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in parents))
    return python


@pytest.mark.slow
def test_the_example_plugin_installed_as_contributing_says_is_listed_and_runs(tmp_path):
    """A non-editable install into a fresh environment, with CONTRIBUTING's offline command verbatim (the
    package path aside), then ``mibench ls methods`` and a causal run in new interpreters."""
    python = _fresh_venv(tmp_path / "venv")
    command = OFFLINE_INSTALL.replace("python", str(python), 1).replace("./my-mib-method", str(EXAMPLE))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([*command.split(), "--quiet", "--no-deps", "--no-index"], check=True, env=env, cwd=tmp_path)
    site_packages = subprocess.run([str(python), "-c", "import mibench_example_plugin as p; print(p.__file__)"],
                                   check=True, capture_output=True, text=True, env=env, cwd=tmp_path).stdout
    assert str(tmp_path / "venv") in site_packages  # installed there, not found in the source tree
    listed = subprocess.run([str(python), "-m", "mibench", "ls", "methods"], check=True, capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert "example:random-subspace" in listed.stdout and "example:eap-cf-gradient" in listed.stdout
    assert "PluginWithoutCardsWarning" not in listed.stderr
    run = subprocess.run([str(python), "-m", "mibench", "evaluate", "--track", "causal", "--method",
                          "example:random-subspace", "--task", "mcqa", "--variable", "answer_pointer", "--limit", "8",
                          "--layers", "0", "--train-examples", "8", "--bootstrap", "10", "--quiet",
                          "--output-dir", str(tmp_path / "runs")], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert list((tmp_path / "runs").rglob("featurizers/L0_*.json"))


# ----------------------------------------------------------------------------- plugin submissions
def _plugin_submission(folder: Path, **plugin) -> Path:
    import yaml

    folder.mkdir(parents=True)
    card = {"method": "Random subspace", "authors": ["A. Person"], "paper": None, "license": "MIT",
            "contact": "a.person@example.org", "track": "causal", "contains": "plugin",
            "models": ["gpt2-tasks", "llama-tasks"], "tasks": ["mcqa", "ioi"],
            "plugin": {"distribution": "mibench-example-plugin", "method": "example:random-subspace", **plugin}}
    (folder / "submission.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return folder


def test_a_plugin_submission_names_an_installed_distribution_that_provides_its_namespace(installed_plugin,
                                                                                        tmp_path):
    from mibench.submissions import check_submission

    assert check_submission(_plugin_submission(tmp_path / "ok", version="0.1.0")) == []
    problems = [str(p) for p in check_submission(_plugin_submission(tmp_path / "old", version="0.0.9"))]
    assert problems == [f"{tmp_path / 'old' / 'submission.yaml'}: plugin.version: '0.0.9', but the installed "
                        "mibench-example-plugin is '0.1.0'"]
    problems = [str(p) for p in check_submission(_plugin_submission(tmp_path / "gone", distribution="acme-mib"))]
    assert len(problems) == 1 and "plugin.distribution: 'acme-mib' is not installed" in problems[0]
    problems = [str(p) for p in check_submission(_plugin_submission(tmp_path / "other", distribution="pytest"))]
    assert len(problems) == 1 and "'pytest' does not provide the namespace 'example'" in problems[0]


def test_a_namespace_with_code_but_no_cards_is_a_named_warning(tmp_path, monkeypatch):
    from mibench.submissions.plugin import cardless_namespace_warning

    package = tmp_path / "acme_dropped_cards"
    (package / "method_a").mkdir(parents=True)
    for path in (package / "__init__.py", package / "method_a" / "__init__.py"):
        path.write_text("")
    (package / "method_a" / "method.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    warning = cardless_namespace_warning("acme", "acme_dropped_cards")
    assert warning is not None and warning.startswith("PluginWithoutCardsWarning: plugin namespace 'acme'")
    (package / "method_a" / "method.yaml").write_text("id: a\n")
    assert cardless_namespace_warning("acme", "acme_dropped_cards") is None


def test_ls_methods_names_a_plugin_installed_without_its_cards(tmp_path, monkeypatch, capsys):
    """`mibench ls methods` lists no method of such a plugin; it must say why instead of staying silent."""
    import sys

    from mibench.cli import main
    from mibench.plugins import PluginSource

    package = tmp_path / "acme_dropped_cards"
    (package / "method_a").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('listing must not import plugin code')\n")
    (package / "method_a" / "method.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("mibench.plugins.plugin_sources",
                        lambda: [PluginSource("acme", "acme_dropped_cards", "acme-mib")])
    assert main(["ls", "methods"]) == 0
    err = capsys.readouterr().err
    assert "PluginWithoutCardsWarning: plugin namespace 'acme'" in err and "Traceback" not in err
    assert "acme_dropped_cards" not in sys.modules
