"""The no-op floor (``metrics.noop_iia``): the IIA an intervention that changes nothing gets on the kept pairs.

On hand-built MCQA pairs, scored against a stand-in model that answers every prompt the causal model's way,
the floor is known in advance: ``randomLetter`` never changes the answer's position, so every label is the
base's own answer (floor 1.0); ``answerPosition`` always moves it, so no label is (floor 0.0). End to end on
the embedded model, the recorded floor equals the IIA of an intervention that swaps no feature.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from mibench.causal.noop import noop_result
from mibench.causal.pairs import build_pairs
from mibench.data.registry import load_task
from mibench.zoo.catalog import model_path
from tests.test_causal_pairs import LookupModel

MODEL = "gpt2-tasks"


def _lookup(tokenizer, answers: dict[str, str], wrong: set[str]) -> LookupModel:
    """The stand-in model, keyed by prompts as the pairs tokenise them (with the model's BOS token first)."""
    model = LookupModel(tokenizer, answers, wrong)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    model.table = {(*bos, *ids): tokens for ids, tokens in model.table.items()}
    return model


@pytest.fixture(scope="module")
def mcqa_pairs():
    task = load_task("mcqa")
    causal_model, examples = task.causal_model(), task.examples("validation", 30)
    tokenizer = AutoTokenizer.from_pretrained(model_path(MODEL))
    answers = {}
    for example in examples:
        answers[example.prompt] = causal_model.output(example.variables)
        for kind in ("randomLetter", "answerPosition"):
            source = example.counterfactual(kind)
            answers[source.prompt] = causal_model.output(source.variables)
    sets = {kind: build_pairs(examples, kind, "answer_pointer", causal_model, tokenizer, ["END"])
            for kind in ("randomLetter", "answerPosition")}
    return sets, _lookup(tokenizer, answers, wrong=set()), examples, (tokenizer, answers)


def test_a_kind_that_keeps_the_variable_has_floor_one_and_one_that_moves_it_floor_zero(mcqa_pairs):
    sets, model, examples, _ = mcqa_pairs
    by_id = {e.id: e for e in examples}
    moved = sets["answerPosition"]
    assert all(label != by_id[i].answer for label, i in zip(moved.labels, moved.example_ids))  # the oracle's premise
    assert noop_result(model, {"randomLetter": sets["randomLetter"]}).accuracy == 1.0
    assert noop_result(model, {"answerPosition": moved}).accuracy == 0.0
    both = noop_result(model, sets, batch_size=7)
    assert both.by_kind == {"randomLetter": 1.0, "answerPosition": 0.0}
    assert both.accuracy == 0.5  # kinds are averaged unweighted, as IIA averages them


def test_the_floor_counts_only_pairs_the_unmodified_model_gets_right_against_the_label(mcqa_pairs):
    """The floor is the unmodified model scored on the labels: a base it would answer otherwise is no hit."""
    sets, _, examples, (tokenizer, answers) = mcqa_pairs
    by_id = {e.id: e for e in examples}
    kept = sets["randomLetter"]
    off = kept.example_ids[::3]
    model = _lookup(tokenizer, answers, wrong={by_id[i].prompt for i in off})
    assert noop_result(model, {"randomLetter": kept}).accuracy == pytest.approx(1 - len(off) / len(kept))


@pytest.mark.slow
def test_recorded_floor_equals_the_iia_of_an_intervention_that_swaps_no_feature(tmp_path, capsys):
    import torch

    from mibench.causal.featurizer import FixedFeatures, IdentityFeaturizer, Interchange
    from mibench.causal.iia import SiteResult
    from mibench.causal.interventions import LayerCache, interchange_correct
    from mibench.causal.pairs import filter_correct, own_answers
    from mibench.cli import main
    from mibench.engine.residual import ResidualRunner
    from mibench.models.loading import load_model
    from mibench.results.causal_record import read_causal_record

    limit = 24
    assert main(["evaluate", "--track", "causal", "--method", "full-vector", "--task", "mcqa", "--variable",
                 "answer_pointer", "--model", MODEL, "--output-dir", str(tmp_path), "--limit", str(limit),
                 "--layers", "1", "--bootstrap", "10", "--batch-size", "16"]) == 0
    assert "no-op floor" in capsys.readouterr().out
    (path,) = tmp_path.rglob("record.json")
    record = read_causal_record(path)
    floor = record.metrics.noop_iia
    assert floor is not None and 0.0 <= floor <= 1.0

    # the same kept pairs, scored with an intervention that swaps none of the identity's features
    loaded, task = load_model(MODEL), load_task("mcqa")
    runner = ResidualRunner(loaded.adapter)
    causal_model, examples = task.causal_model(), task.examples("test", limit)
    roles = record.task.positions
    nothing = Interchange(IdentityFeaturizer(runner.d_model), FixedFeatures(runner.d_model, indices=[]))
    for layer in (0, 2):
        correct = {}
        for kind in record.task.counterfactuals:
            pairs = build_pairs(examples, kind, "answer_pointer", causal_model, loaded.tokenizer, roles)
            kept = filter_correct(pairs, runner, base_answers=own_answers(examples, pairs, loaded.tokenizer))
            assert len(kept) == record.task.test_pairs[kind]
            correct[kind] = interchange_correct(runner, nothing, LayerCache(runner, kept, layer).site("END"))
        assert SiteResult(layer, "END", correct).accuracy == floor
    assert torch.is_tensor(correct["randomLetter"]) and bool(correct["randomLetter"].all())  # floor 1 on this kind
