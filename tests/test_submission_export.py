"""``mibench submission export`` writes MIB's leaderboard layout; ``submission check --layout mib`` reads it back.

The featurizer conversion is checked against MIB's own loading procedure (``Featurizer.load_modules``,
re-done here with pyvene's ``LowRankRotateLayer``, the orthogonal parametrisation, and a strict
``load_state_dict``). The rebuilt featurizer's interchange ``f_out = f_source`` must equal mibench's
interchange, for DAS, for DBM over neurons, for PCA with a subset of components, and for the full vector.
End to end, runs of the embedded models at a small ``--limit`` are exported, the export passes the checker,
and broken copies fail it with the file and field named.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mibench.causal.featurizer import (
    AllFeatures,
    FixedFeatures,
    IdentityFeaturizer,
    Interchange,
    PCAFeaturizer,
    SubspaceFeaturizer,
)
from mibench.cli import main
from mibench.submissions.export import ExportError, export_submission, mib_featurizer_files
from mibench.submissions.mib_check import check_mib_layout

D = 12


def _mib_rebuild(info: dict, state: dict):
    """MIB's ``Featurizer.load_modules`` + its featurizer modules' forward, as functions of x."""
    if info["featurizer_class"] == "IdentityFeaturizerModule":
        assert state == {}
        return lambda x: (x, torch.zeros_like(x)), lambda f, e: f + e
    pv = pytest.importorskip("pyvene")
    rot = info["additional_config"]["rotation_matrix"]
    layer = pv.models.layers.LowRankRotateLayer(*rot.shape, init_orth=False)
    layer.weight.data.copy_(rot)
    layer = torch.nn.utils.parametrizations.orthogonal(layer)
    holder = torch.nn.Module()
    holder.rotate = layer
    holder.load_state_dict(state)  # strict: the file's keys must be exactly MIB's

    def featurize(x):  # SubspaceFeaturizerModule.forward
        r = holder.rotate.weight.T
        f = x.to(r.dtype) @ r.T
        return f, x - (f @ r).to(x.dtype)

    def inverse(f, error):  # SubspaceInverseFeaturizerModule.forward
        r = holder.rotate.weight.T
        return (f.to(r.dtype) @ r).to(f.dtype) + error.to(f.dtype)

    return featurize, inverse


def _interchanges() -> dict[str, Interchange]:
    torch.manual_seed(0)
    pca = PCAFeaturizer(D, n_features=6)
    pca.fit(torch.randn(40, D) @ torch.randn(D, D) + 3.0)
    return {
        "das": Interchange(SubspaceFeaturizer(D, 4), AllFeatures(4)),
        "dbm-neurons": Interchange(IdentityFeaturizer(D), FixedFeatures(D, [0, 3, 7])),
        "pca-subset": Interchange(pca, FixedFeatures(6, [1, 2, 5])),
        "full-vector": Interchange(IdentityFeaturizer(D), AllFeatures(D)),
    }


@pytest.mark.parametrize("kind", list(_interchanges()))
def test_exported_featurizer_rebuilt_as_mib_does_gives_the_same_interchange(kind, tmp_path):
    interchange = _interchanges()[kind]
    info, state, indices = mib_featurizer_files(interchange, "site")
    path = tmp_path / "unit_featurizer"
    torch.save({"model_info": info, "state_dict": state}, path)
    saved = torch.load(path, weights_only=True)  # loadable without running code
    featurize, inverse = _mib_rebuild(saved["model_info"], saved["state_dict"])
    assert indices is None  # every feature of the written basis is swapped
    base, source = torch.randn(5, D, dtype=torch.float32), torch.randn(5, D, dtype=torch.float32)
    f_base, e_base = featurize(base)
    f_source, _ = featurize(source)
    mib = inverse(f_source, e_base)  # FeatureInterchangeIntervention with all features
    with torch.no_grad():
        ours = interchange(base, source)
    torch.testing.assert_close(mib, ours.to(mib.dtype), rtol=1e-5, atol=1e-5)
    if kind != "full-vector":
        assert not torch.allclose(ours, source, atol=1e-3)  # a partial swap, not the trivial one


def test_a_site_that_swaps_nothing_is_the_identity_with_no_indices():
    info, state, indices = mib_featurizer_files(Interchange(SubspaceFeaturizer(D, 3), FixedFeatures(3, [])), "site")
    assert info["featurizer_class"] == "IdentityFeaturizerModule" and state == {} and indices == []


def test_featurizers_without_a_linear_basis_are_refused():
    class NotIdentity(torch.nn.Module):
        d_model, n_features = D, D

    interchange = Interchange(IdentityFeaturizer(D), FixedFeatures(D, [1]))
    interchange.featurizer = NotIdentity()
    with pytest.raises(ExportError, match="site: featurizer: NotIdentity has no linear basis"):
        mib_featurizer_files(interchange, "site")


# ------------------------------------------------------------------ end to end (embedded models)
QUICK = ["--limit", "6", "--bootstrap", "5", "--quiet"]


@pytest.fixture(scope="module")
def circuit_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for model in ("gpt2-tasks", "llama-tasks"):
        for task in ("ioi", "mcqa"):
            status = main(["evaluate", "--method", "eap", "--task", task, "--model", model,
                           "--attribution-examples", "6", "--output-dir", str(out), *QUICK])
            assert status == 0
    return out


@pytest.mark.slow
def test_circuit_export_passes_the_mib_layout_check(circuit_runs, tmp_path, capsys):
    target = tmp_path / "mib"
    report = export_submission([circuit_runs], target)
    names = sorted(c.folder.name for c in report.cells)
    assert names == ["ioi_gpt2-tasks", "ioi_llama-tasks", "mcqa_gpt2-tasks", "mcqa_llama-tasks"]
    assert report.warnings and "gpt2-tasks" in report.warnings[0]
    for cell in report.cells:  # the run's scores.json, byte for byte
        assert (cell.folder / "importances.json").read_bytes() == (cell.record.parent / "scores.json").read_bytes()
    checked = check_mib_layout(target)
    assert checked.track == "circuit" and checked.ok, checked.problems
    assert main(["submission", "check", "--layout", "mib", str(target)]) == 0
    assert "ok (MIB circuit layout; 4 folder(s), 2 models, 2 tasks)" in capsys.readouterr().out

    # MIB's ranking folders are read too
    ranked = tmp_path / "ranked"
    shutil.copytree(target, ranked / "abs-False")
    assert check_mib_layout(ranked).ok


@pytest.mark.slow
def test_broken_circuit_exports_fail_the_check_naming_file_and_field(circuit_runs, tmp_path, capsys):
    target = tmp_path / "mib"
    export_submission([circuit_runs], target)
    # a score that is not a number
    broken = target / "ioi_gpt2-tasks" / "importances.json"
    data = json.loads(broken.read_text())
    data["edges"]["input->logits"]["score"] = "high"
    broken.write_text(json.dumps(data))
    (target / "stray.txt").write_text("x")
    (target / "ioi_gpt3").mkdir()
    problems = [str(p) for p in check_mib_layout(target).problems]
    assert any(p.endswith('ioi_gpt2-tasks/importances.json: edges["input->logits"].score: expected a number, '
                          "got str 'high'") for p in problems), problems
    assert any(p.endswith("stray.txt: unexpected file: circuit files belong in <task>_<model>/ folders "
                          "(e.g. ioi_gpt2/importances.json)") for p in problems)
    assert any("ioi_gpt3: unknown model 'gpt3'" in p for p in problems)
    assert main(["submission", "check", "--layout", "mib", str(target)]) == 1
    capsys.readouterr()

    one_task = tmp_path / "one-task"
    shutil.copytree(target / "ioi_llama-tasks", one_task / "ioi_llama-tasks")
    messages = [p.message for p in check_mib_layout(one_task).problems]
    assert any("at least 2 tasks" in m for m in messages) and any("at least 2 models" in m for m in messages)


@pytest.mark.slow
def test_export_refuses_ambiguous_or_unsafe_requests(circuit_runs, tmp_path):
    with pytest.raises(ExportError, match="no record matches method 'das'"):
        export_submission([circuit_runs], tmp_path / "a", method="das")
    taken = tmp_path / "taken"
    (taken / "x").mkdir(parents=True)
    with pytest.raises(ExportError, match="already exists and is not an empty folder"):
        export_submission([circuit_runs], taken)
    twice = tmp_path / "twice"
    shutil.copytree(circuit_runs, twice / "a")
    shutil.copytree(circuit_runs, twice / "b")
    with pytest.raises(ExportError, match="both give folder"):
        export_submission([twice], tmp_path / "b")
    assert main(["submission", "export", str(tmp_path / "nothing"), "-o", str(tmp_path / "c")]) != 0


@pytest.mark.slow
def test_causal_export_passes_the_mib_layout_check(tmp_path, capsys):
    runs = tmp_path / "runs"
    for method in ("das", "dbm"):
        status = main(["evaluate", "--track", "causal", "--method", method, "--task", "mcqa", "--variable",
                       "answer_pointer", "--model", "gpt2-tasks", "--layers", "1", "--positions", "correct_symbol,END",
                       "--method-arg", "epochs=1", "--output-dir", str(runs / method), *QUICK])
        assert status == 0
    for method in ("das", "dbm"):
        target = tmp_path / f"mib-{method}"
        assert main(["submission", "export", str(runs / method), "-o", str(target)]) == 0
        folder = target / "4_answer_MCQA_gpt2-tasks_answer_pointer"
        names = sorted(p.name for p in folder.iterdir())
        assert names == [f"ResidualStream(Layer-1,Token-{pos}){suffix}" for pos in ("correct_symbol", "last_token")
                         for suffix in ("_featurizer", "_indices", "_inverse_featurizer")]
        report = check_mib_layout(target)
        assert report.track == "causal" and report.ok, report.problems
    capsys.readouterr()

    # broken copies: a bad index, an inverse file missing, a layer the model lacks
    folder = tmp_path / "mib-das" / "4_answer_MCQA_gpt2-tasks_answer_pointer"
    unit = "ResidualStream(Layer-1,Token-last_token)"
    (folder / f"{unit}_indices").write_text(json.dumps([0, 99]))
    (folder / "ResidualStream(Layer-1,Token-correct_symbol)_inverse_featurizer").unlink()
    shutil.copy(folder / f"{unit}_featurizer", folder / "ResidualStream(Layer-40,Token-last_token)_featurizer")
    (folder / "ResidualStream(Layer-40,Token-last_token)_inverse_featurizer").write_bytes(b"not torch")
    (folder / "ResidualStream(Layer-40,Token-last_token)_indices").write_text("null")
    problems = [str(p) for p in check_mib_layout(tmp_path / "mib-das").problems]
    assert any(p.endswith(f"{unit}_indices: [1]: 99 is not a feature index (0..15)") for p in problems), problems
    assert any("correct_symbol)_inverse_featurizer: missing" in p for p in problems)
    assert any("Layer-40,Token-last_token): layer 40 does not exist" in p for p in problems)
    assert any("Layer-40,Token-last_token)_inverse_featurizer: not a plain torch data file" in p for p in problems)
