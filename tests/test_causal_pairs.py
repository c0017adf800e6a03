"""The per-pair decisions of the causal track on hand-built pairs: labels, tokens, the keep-filter, correctness.

A tokenizer that splits numbers into single digits makes every arithmetic answer several tokens long, so
the multi-token path (teacher forcing, one read position per answer token, all tokens must be right) is
exercised. The model is replaced by a lookup that answers a chosen set of prompts right and the others wrong
on one token only, so the filter's decisions can be stated in advance.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mibench.causal.pairs import answers_correct, build_pairs, filter_correct, own_answers, predictions_match
from mibench.data.registry import load_task

DIGITS = [str(d) for d in range(10)]
WORDS = ["Q", ":", "How", "much", "is", "plus", "minus", "?", "A"]


@pytest.fixture(scope="module")
def digit_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer that splits every number into its digits (as many LLM tokenizers do)."""
    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", *WORDS, *DIGITS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Digits(individual_digits=True)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>")
    assert tokenizer.convert_ids_to_tokens(tokenizer(" 123", add_special_tokens=False)["input_ids"]) == ["1", "2", "3"]
    return tokenizer


@pytest.fixture(scope="module")
def addition():
    task = load_task("arithmetic_addition")
    return task.causal_model(), task.examples("validation", 40)


def _digits(tokenizer, ids: torch.Tensor, mask: torch.Tensor) -> str:
    return "".join(tokenizer.convert_ids_to_tokens(ids[mask].tolist()))


# --------------------------------------------------------------------------------------- predictions_match
def test_predictions_match_needs_every_real_answer_token_and_ignores_padding_slots():
    logits = torch.full((3, 3, 5), -1.0)
    answers = torch.tensor([[1, 2, 0], [1, 2, 3], [4, 0, 0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    for row, predicted in enumerate([[1, 2, 4], [1, 2, 2], [4, 3, 3]]):  # row 1 misses its last token only
        for slot, token in enumerate(predicted):
            logits[row, slot, token] = 1.0
    assert predictions_match(logits, answers, mask).tolist() == [True, False, True]


# ------------------------------------------------------------------------------------------- labels, tokens
def test_multi_token_labels_are_computed_by_hand_and_teacher_forced(digit_tokenizer, addition):
    causal_model, examples = addition
    pairs = build_pairs(examples, "random", "ones_carry", causal_model, digit_tokenizer, ["op2_last", "END"])
    assert len(pairs) == len(examples) and not pairs.dropped
    by_id = {e.id: e for e in examples}
    lengths = set()
    for row, example_id in enumerate(pairs.example_ids):
        base, source = by_id[example_id].variables, by_id[example_id].counterfactual("random").variables
        # the ones column of the base, the carry of the source
        carry = int(source["op1_ones"] + source["op2_ones"] >= 10)
        by_hand = 10 * (base["op1_tens"] + base["op2_tens"] + carry) + (base["op1_ones"] + base["op2_ones"]) % 10
        assert pairs.labels[row] == f" {by_hand}"
        answer_mask = pairs.base.answer_mask[row]
        assert _digits(digit_tokenizer, pairs.base.answer_ids[row], answer_mask) == str(by_hand)
        n = int(answer_mask.sum())
        lengths.add(n)
        prompt_len = len(digit_tokenizer(by_id[example_id].prompt, add_special_tokens=False)["input_ids"])
        # the logits before each answer token predict it: prompt end, then the teacher-forced label tokens
        assert pairs.base.read_positions[row, :n].tolist() == list(range(prompt_len - 1, prompt_len - 1 + n))
        real = pairs.base.ids[row][pairs.base.mask[row].bool()]
        assert real[prompt_len:].tolist() == pairs.base.answer_ids[row, : n - 1].tolist()
        # END is the prompt's last token, op2_last the second operand's last digit
        assert int(pairs.base_positions["END"][row]) == prompt_len - 1
        second = digit_tokenizer.convert_ids_to_tokens([int(real[pairs.base_positions["op2_last"][row]])])[0]
        assert second == str(base["op2_tens"] * 10 + base["op2_ones"])[-1]
    assert lengths == {2, 3}  # two- and three-digit sums: labels of several lengths in one padded batch


def test_a_kind_that_leaves_the_variable_unchanged_labels_every_pair_with_the_base_answer():
    """MCQA's randomLetter keeps the answer's position: a no-op intervention is always right (the IIA floor)."""
    task = load_task("mcqa")
    causal_model = task.causal_model()
    examples = task.examples("validation", 50)
    for example in examples:
        source = example.counterfactual("randomLetter")
        assert causal_model.interchange_label(example.variables, source.variables, "answer_pointer") == example.answer
        assert source.answer != example.answer  # the letters changed, so the source's answer is another one


# ----------------------------------------------------------------------------------------------- the filter
class LookupModel:
    """Stands in for the LM: predicts each prompt's causal-model answer, one token wrong on chosen prompts."""

    def __init__(self, tokenizer, answers: dict[str, str], wrong: set[str]) -> None:
        self.table = {}
        for prompt, answer in answers.items():
            ids = tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            tokens = tokenizer(answer, add_special_tokens=False)["input_ids"]
            if prompt in wrong:
                tokens = [*tokens[:-1], (tokens[-1] + 1) % len(tokenizer)]  # the last digit is off
            self.table[ids] = tokens
        self.vocab = len(tokenizer)

    def forward(self, ids, mask, *, read_positions):
        logits = torch.zeros(*read_positions.shape, self.vocab)
        for row in range(ids.shape[0]):
            prompt = tuple(ids[row, : int(read_positions[row, 0]) + 1].tolist())
            for slot, token in enumerate(self.table[prompt][: read_positions.shape[1]]):
                logits[row, slot, token] = 1.0
        return logits


def test_keep_filter_keeps_pairs_whose_base_and_source_the_model_answers(digit_tokenizer, addition):
    causal_model, examples = addition
    pairs = build_pairs(examples, "random", "ones_carry", causal_model, digit_tokenizer, ["END"])
    answers = {}
    for e in examples:
        answers[e.prompt] = causal_model.output(e.variables)
        source = e.counterfactual("random")
        answers[source.prompt] = causal_model.output(source.variables)
    wrong_bases = {e.prompt for e in examples[::4]}
    wrong_sources = {e.counterfactual("random").prompt for e in examples[1::4]}
    model = LookupModel(digit_tokenizer, answers, wrong_bases | wrong_sources)
    kept = filter_correct(pairs, model, base_answers=own_answers(examples, pairs, digit_tokenizer), batch_size=7)
    expected = [e.id for i, e in enumerate(examples) if i % 4 not in (0, 1)]
    assert kept.example_ids == expected
    assert kept.dropped["model wrong on base"] == len(examples[::4])
    assert kept.dropped["model wrong on source"] == len(examples[1::4])
    # the base is judged on its own answer, not on the interchange label (which often differs)
    assert any(label != e.answer for label, e in zip(pairs.labels, examples))
    # a perfect model keeps every pair; and it would be judged wrong against the labels where they differ
    perfect = LookupModel(digit_tokenizer, answers, set())
    assert len(filter_correct(pairs, perfect, base_answers=own_answers(examples, pairs, digit_tokenizer))) == len(pairs)
    on_labels = answers_correct(perfect, pairs.base)  # teacher-forced labels: right exactly where label == answer
    assert on_labels.tolist() == [label == e.answer for label, e in zip(pairs.labels, examples)]


def test_keep_filter_follows_the_causal_model_not_the_answer_strings(digit_tokenizer, addition):
    """Hand-built pairs whose answer strings disagree with the causal model: the base's string on one, the
    source's on another. The filter holds the model to the causal model's output, so a model that says what
    the causal model says keeps every pair, and one that says the strings loses exactly the two."""
    causal_model, examples = addition
    examples = examples[:6]
    wrong = {e.prompt: f" {int(e.answer) + 1}" for e in examples}  # never the causal model's output
    base_off = dataclasses.replace(examples[0], answer=wrong[examples[0].prompt])
    source = examples[1].counterfactual("random")
    source_off = dataclasses.replace(examples[1], counterfactuals={
        **examples[1].counterfactuals, "random": dataclasses.replace(source, answer=f" {int(source.answer) + 1}")})
    hand_built = [base_off, source_off, *examples[2:]]
    assert base_off.answer != causal_model.output(base_off.variables)
    assert source_off.counterfactual("random").answer != causal_model.output(source.variables)

    pairs = build_pairs(hand_built, "random", "ones_carry", causal_model, digit_tokenizer, ["END"])
    assert len(pairs) == len(hand_built)
    assert pairs.base_outputs == [causal_model.output(e.variables) for e in hand_built]
    causal = {}
    strings = {}
    for e in hand_built:
        cf = e.counterfactual("random")
        causal |= {e.prompt: causal_model.output(e.variables), cf.prompt: causal_model.output(cf.variables)}
        strings |= {e.prompt: e.answer, cf.prompt: cf.answer}
    base_answers = own_answers(hand_built, pairs, digit_tokenizer)

    follows_causal_model = LookupModel(digit_tokenizer, causal, set())
    kept = filter_correct(pairs, follows_causal_model, base_answers=base_answers)
    assert kept.example_ids == [e.id for e in hand_built] and +kept.dropped == {}

    says_the_strings = LookupModel(digit_tokenizer, strings, set())
    kept = filter_correct(pairs, says_the_strings, base_answers=base_answers)
    assert kept.example_ids == [e.id for e in hand_built[2:]]
    assert kept.dropped == {"model wrong on base": 1, "model wrong on source": 1}


def test_own_answers_refuses_pairs_without_the_causal_models_base_outputs(digit_tokenizer, addition):
    causal_model, examples = addition
    pairs = build_pairs(examples, "random", "ones_carry", causal_model, digit_tokenizer, ["END"])
    pairs.base_outputs = []
    with pytest.raises(ValueError, match="causal model's output"):
        own_answers(examples, pairs, digit_tokenizer)


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("task, variable", [("mcqa", "answer_pointer"), ("ioi", "output_position")])
def test_full_vector_at_the_final_layer_has_values_known_in_closed_form(tmp_path, task, variable):
    """Swapping the whole residual after the last block: at the answer position the model's output becomes the
    source's own answer (the filter keeps only sources it answers right), so IIA is the share of kept pairs whose
    label is the source's answer; at any earlier position nothing downstream reads it, so IIA is the share whose
    label is the base's answer (the no-op floor). Both follow from the data alone."""
    from mibench.cli import main
    from mibench.engine.residual import ResidualRunner
    from mibench.models.loading import load_model
    from mibench.results.causal_record import read_causal_record

    model, limit = "gpt2-tasks", 40
    loaded = load_model(model)
    runner = ResidualRunner(loaded.adapter)
    final = runner.n_layers - 1
    assert main(["evaluate", "--track", "causal", "--method", "full-vector", "--task", task, "--variable", variable,
                 "--model", model, "--output-dir", str(tmp_path), "--limit", str(limit), "--layers", str(final),
                 "--bootstrap", "10", "--quiet"]) == 0
    (path,) = tmp_path.rglob("record.json")
    record = read_causal_record(path)

    loaded_task = load_task(task)
    causal_model, examples = loaded_task.causal_model(), loaded_task.examples("test", limit)
    by_id = {e.id: e for e in examples}
    for site in record.sites:
        assert site.layer == final
        for kind, iia in site.iia_by_kind.items():
            pairs = build_pairs(examples, kind, variable, causal_model, loaded.tokenizer, [site.role])
            kept = filter_correct(pairs, runner, base_answers=own_answers(examples, pairs, loaded.tokenizer))
            reference = ([by_id[i].counterfactual(kind).answer for i in kept.example_ids] if site.role == "END"
                         else [by_id[i].answer for i in kept.example_ids])
            expected = sum(label == answer for label, answer in zip(kept.labels, reference)) / len(kept)
            assert iia == pytest.approx(expected, abs=1e-12), (site.role, kind)
            if kind == "randomLetter" and site.role != "END":
                assert iia == 1.0  # the pointer is unchanged: the floor of this kind is perfect
