"""Task framework: cards, registry, deterministic disjoint splits, private seeds, tokenization checks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mibench.data.card import TaskCardError, load_card, trained_version_accepted
from mibench.data.example import Counterfactual, Example
from mibench.data.registry import UnknownTaskError, get_card, list_cards, load_task
from mibench.data.splits import PRIVATE_SEED_ENV, SPLITS, partition_of
from mibench.data.task import fill
from mibench.data.tokenization import TokenizationError, answer_token, check_aligned, role_positions


# ------------------------------------------------------------------ cards
def _write_card(tmp_path, **overrides):
    card = {
        "id": "toy", "version": '"1.0"', "name": "Toy", "description": "a toy task",
        "entry": "mibench.tasks.toy.task:ToyTask", "splits": "{train: 10, test: 5}", "metric": "logit_difference",
        "counterfactuals": "[swap]", "default_counterfactual": "swap", "schema": "{END: last token}",
    }
    card.update(overrides)
    path = tmp_path / "card.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in card.items() if v is not None))
    return path


def test_card_loads_and_versions_are_integer_pairs(tmp_path):
    card = load_card(_write_card(tmp_path, version='"2.10"'))
    assert (card.version.comparability, card.version.interface) == (2, 10)
    assert str(card.version) == "2.10"


@pytest.mark.parametrize("overrides,field", [
    ({"version": "1.10"}, "version"),                       # a YAML float: 1.10 would silently become 1.1
    ({"splits": "{train: 10, holdout: 5}"}, "splits"),
    ({"default_counterfactual": "flip"}, "default_counterfactual"),
    ({"entry": "not an import path"}, "entry"),
    ({"metric": None}, "metric"),
    ({"colour": "blue"}, "colour"),
    ({"same_task_since": '"1.1"'}, "same_task_since"),     # newer than the card's version 1.0
    ({"same_task_since": "1.0"}, "same_task_since"),
])
def test_malformed_cards_name_the_file_and_field(tmp_path, overrides, field):
    path = _write_card(tmp_path, **overrides)
    with pytest.raises(TaskCardError) as info:
        load_card(path)
    assert str(path) in str(info.value) and field in str(info.value)


def test_a_model_trained_on_an_older_version_is_accepted_only_since_the_same_task(tmp_path):
    """same_task_since states which older versions taught the same task (e.g. 2.0 only moved spans)."""
    card = load_card(_write_card(tmp_path, version='"2.1"', same_task_since='"1.2"',
                                 changelog='{"2.0": spans follow each prompt}'))
    assert card.changelog == {"2.0": "spans follow each prompt"}
    accepted = {v: trained_version_accepted(card, v) for v in ("1.1", "1.2", "1.9", "2.0", "2.1", "2.2", "3.0")}
    assert accepted == {"1.1": False, "1.2": True, "1.9": True, "2.0": True, "2.1": True, "2.2": False, "3.0": False}
    default = load_card(_write_card(tmp_path, version='"2.1"'))  # no field: only the current major
    assert [trained_version_accepted(default, v) for v in ("1.9", "2.0", "2.1")] == [False, True, True]
    with pytest.raises(ValueError, match="not 'X.Y'"):
        trained_version_accepted(card, "2")


# --------------------------------------------------------------- registry
def test_registry_lists_builtin_cards_without_importing_task_code_or_torch():
    code = textwrap.dedent("""
        import sys
        from mibench.data.registry import list_cards
        ids = [c.id for c in list_cards()]
        assert "ioi" in ids, ids
        assert "torch" not in sys.modules
        assert not any(m.startswith("mibench.tasks.ioi.") for m in sys.modules)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_task_suggests_the_closest():
    with pytest.raises(UnknownTaskError, match="did you mean 'ioi'"):
        get_card("iio")


def test_every_builtin_card_loads_its_registered_task():
    for card in list_cards():
        task = load_task(card.id)
        assert task.card.id == card.id


# ----------------------------------------------------------------- splits
def test_partitions_are_stable_and_proportioned():
    keys = [f"k{i}" for i in range(20000)]
    counts = {s: 0 for s in SPLITS}
    for key in keys:
        counts[partition_of("ioi", key)] += 1
    assert abs(counts["train"] / 20000 - 0.7) < 0.02
    for split in ("validation", "test", "private_test"):
        assert abs(counts[split] / 20000 - 0.1) < 0.01
    assert partition_of("ioi", "Mary|John") == partition_of("ioi", "Mary|John")
    assert partition_of("ioi", "k1") != partition_of("other", "k1") or partition_of("ioi", "k2") != partition_of(
        "other", "k2")  # the task id is part of the hash


def test_private_test_needs_the_secret_seed(monkeypatch):
    task = load_task("ioi")
    monkeypatch.delenv(PRIVATE_SEED_ENV, raising=False)
    with pytest.raises(RuntimeError, match=PRIVATE_SEED_ENV):
        task.examples("private_test", 5)
    monkeypatch.setenv(PRIVATE_SEED_ENV, "1234")
    first = task.examples("private_test", 20)
    monkeypatch.setenv(PRIVATE_SEED_ENV, "99")
    other = task.examples("private_test", 20)
    assert [e.prompt for e in first] != [e.prompt for e in other]
    public = {e.prompt for e in task.examples("test", 200)}
    assert not public & {e.prompt for e in first}


def test_unknown_split_is_refused_with_a_suggestion():
    with pytest.raises(ValueError, match="did you mean 'validation'"):
        load_task("ioi").examples("valdation", 3)


# ------------------------------------------------------------------ helpers
def test_fill_returns_slot_spans():
    text, spans = fill("When {A} met {B}, {A} smiled at", {"A": "Mary", "B": "John"})
    assert text == "When Mary met John, Mary smiled at"
    assert text[slice(*spans["A"])] == "Mary" and spans["A"] == (5, 9)
    assert text[slice(*spans["B"])] == "John"


# ------------------------------------------------------------ tokenization
def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["When", "Mary", "and", "John", "went", "to", "the", "store", ",", "gave", "a", "drink", "Alice"]
    vocab = {"[UNK]": 0, "[PAD]": 1, "[BOS]": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]")


def _example(prompt: str, cf_prompt: str) -> Example:
    return Example("toy/test/000007", prompt, " Mary", {"swap": Counterfactual(cf_prompt, " John")})


def test_answer_tokens_must_be_single_known_tokens():
    tok = _tokenizer()
    assert answer_token(tok, " Mary", "x") == tok.convert_tokens_to_ids("Mary")
    with pytest.raises(TokenizationError, match="example toy/test/000007: answer ' Mary John' is 2 tokens"):
        answer_token(tok, " Mary John", "toy/test/000007")
    with pytest.raises(TokenizationError, match="unknown"):
        answer_token(tok, " Zebedee", "toy/test/000007")


def test_counterfactual_length_mismatch_names_the_example():
    tok = _tokenizer()
    check_aligned(tok, _example("When Mary and John went", "When John and Mary went"), "swap")
    with pytest.raises(TokenizationError, match="example toy/test/000007: clean prompt has 6 tokens"):
        check_aligned(tok, _example("When Mary and John went", "When John went"), "swap")


def test_role_positions_follow_character_spans_and_bos():
    tok = _tokenizer()
    text = "When Mary and John went to the store , John gave a drink to"
    positions = role_positions(tok, text, {"IO": (5, 9), "S2": (text.rindex("John"), text.rindex("John") + 4)})
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert positions["IO"] == [2]  # BOS shifts every position by one
    assert ids[positions["S2"][0] - 1] == tok.convert_tokens_to_ids("John")


def test_ls_tasks_lists_cards_without_torch():
    code = textwrap.dedent("""
        import sys
        from mibench.cli import main
        assert main(["ls", "tasks"]) == 0
        assert "torch" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "ioi" in out and "1.0" in out and "s2_io_flip" in out and "mib-bench/ioi" in out


def test_only_generated_tasks_are_procedural():
    kinds = {card.id: load_task(card.id).procedural for card in list_cards()}
    assert kinds["ioi"] and kinds["mcqa"] and kinds["arithmetic_addition"] and kinds["induction"]
    assert not kinds["arc_easy"] and not kinds["arc_challenge"]


def test_private_test_membership_is_public_only_the_sample_is_secret(monkeypatch):
    """What tasks/README.md states: anyone can enumerate the held-out partition without the secret (here the
    addition problems), and every example drawn under any secret seed comes from it."""
    from mibench.tasks.arithmetic.problems import ADDITION, OPERANDS, Problem, carry_flips

    pool = set()
    for op1 in OPERANDS:
        for op2 in OPERANDS:
            problem = Problem(ADDITION, op1, op2)
            if carry_flips(problem) and partition_of("arithmetic_addition", problem.split_key) == "private_test":
                pool.add((op1, op2))
    assert 600 <= len(pool) <= 800  # "about 700", of which the split draws 500
    task = load_task("arithmetic_addition")
    for seed in ("1234", "99"):
        monkeypatch.setenv(PRIVATE_SEED_ENV, seed)
        drawn = {(e.variables["op1_tens"] * 10 + e.variables["op1_ones"], e.variables["op2_tens"] * 10
                  + e.variables["op2_ones"]) for e in task.examples("private_test", 100)}
        assert drawn <= pool
