"""The zoo's tokenizer and training script, end to end on a tiny budget."""

from __future__ import annotations

import json

import pytest
import torch

from mibench.data.registry import load_task
from mibench.data.tokenization import answer_token
from mibench.models.loading import load_model
from training.vocab import build_tokenizer, words_of
from training.zoo import main


def test_word_tokenizer_makes_every_answer_one_token():
    examples = load_task("ioi").examples("test", 50)
    tokenizer = build_tokenizer(words_of(examples))
    for example in examples:
        answer_token(tokenizer, example.answer, example.id)
        for cf in example.counterfactuals.values():
            answer_token(tokenizer, cf.answer, example.id)
    assert tokenizer(examples[0].prompt, add_special_tokens=False)["input_ids"].count(tokenizer.unk_token_id) == 0


def test_training_script_writes_a_model_folder_that_loads_through_the_adapter(tmp_path):
    out = tmp_path / "model"
    main(["--arch", "llama", "--tasks", "ioi", "--examples", "200", "--layers", "1", "--width", "32",
          "--heads", "4", "--kv-heads", "2", "--minutes", "0.05", "--eval-every", "5", "--out", str(out)])
    card = json.loads((out / "zoo_card.json").read_text())
    assert set(card["accuracy"]["ioi"]) == {"validation", "test"}
    assert card["steps"] >= 1 and card["parameters"] > 0
    loaded = load_model(out)
    assert loaded.adapter.family == "llama" and loaded.adapter.n_kv_heads == 2
    example = load_task("ioi").examples("test", 1)[0]
    ids = torch.tensor([[loaded.tokenizer.bos_token_id] + loaded.tokenizer(example.prompt)["input_ids"]])
    assert loaded.model(ids).logits.shape[-1] == len(loaded.tokenizer)


def test_split_digit_tokenizer_reads_operands_digit_by_digit_and_answers_whole():
    examples = load_task("arithmetic_addition").examples("test", 30)
    tokenizer = build_tokenizer(words_of(examples, split_digits=True), split_digits=True)
    example = examples[0]
    pieces = tokenizer.convert_ids_to_tokens(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
    op1, op2 = str(example.variables["op1_tens"]), str(example.variables["op2_tens"])
    assert pieces[5:7] == [op1, str(example.variables["op1_ones"])] and pieces[8] == op2
    assert all(len(p) == 1 for p in pieces if p.isdigit())
    for ex in examples:
        token = answer_token(tokenizer, ex.answer, ex.id)
        assert tokenizer.convert_ids_to_tokens(token) == ex.answer.strip()


def test_training_stream_never_yields_a_held_out_split_key():
    import random
    import re

    from mibench.data.splits import partition_of
    from training.zoo import train_items

    stream = train_items(load_task("arithmetic_addition"), random.Random(0))
    for _ in range(300):
        prompt, answer, _ = next(stream)
        a, b = sorted(int(x) for x in re.findall(r"\d+", prompt))
        assert partition_of("arithmetic_addition", f"{a}|{b}") == "train" and int(answer) == a + b
    stream = train_items(load_task("mcqa"), random.Random(0))
    for _ in range(300):
        prompt, _, _ = next(stream)
        obj, color = re.match(r"Question: The (\w+) is (\w+)\.", prompt).groups()
        assert partition_of("mcqa", f"{obj}|{color}") == "train"


def test_contained_induction_prompts_are_train_keyed_prefixes_supervised_at_their_last_tokens():
    import random

    from mibench.data.splits import partition_of
    from training.zoo import Stream, train_items

    task = load_task("induction")
    for example in task.examples("train", 40):
        copy_len = example.variables["copy_index"]
        contained = task.contained_prompts(example)
        assert len(contained) == copy_len - 2  # every shorter valid repeat, 2 <= j < m
        for key, prompt, answer in contained:
            assert example.prompt.startswith(prompt + " ")
            words = prompt.split(" ")
            query, expected = key.split("|")
            assert words[-1] == query and answer == " " + expected
            assert words.index(query) + 1 < len(words) and words[words.index(query) + 1] == expected

    items = train_items(task, random.Random(0), contained=True)
    drawn = [next(items) for _ in range(200)]
    assert sum(len(inner) for _, _, inner in drawn) > 100
    inner_keys = [f"{p.split()[-1]}|{a.strip()}" for _, _, inner in drawn for p, a in inner]  # (query, answer)
    assert all(partition_of("induction", key) == "train" for key in inner_keys)

    examples = task.examples("train", 200)
    tokenizer = build_tokenizer(words_of(examples))
    stream = Stream(train_items(task, random.Random(0), contained=True), tokenizer, random.Random(1), buffer=8)
    data = stream.take(64)
    for row, extra in zip(data.prompts, data.extra):
        words = tokenizer.convert_ids_to_tokens(row[1:])
        for position, target in extra:  # the token at `position` is the query; the answer follows its first occurrence
            query = words[position - 1]
            assert tokenizer.convert_ids_to_tokens(target) == words[words.index(query) + 1]


def test_repeat_lists_copy_any_word_and_never_use_an_induction_noun():
    import random

    from training.zoo import repeat_items

    nouns = words_of(load_task("induction").examples("train", 300))
    pool = sorted(w for w in words_of(load_task("ioi").examples("train", 200)) if w.isalpha() and w not in nouns)
    items = repeat_items(pool, random.Random(0))
    for _ in range(100):
        prompt, answer, contained = next(items)
        words = prompt.split(" ")
        assert not nouns & set(words)
        copy_len = len(contained) + 2  # every shorter repeat 2 <= j < m is a contained prompt
        listed = words[: len(words) - copy_len]
        assert 6 <= len(listed) <= 10 and len(set(listed)) == len(listed)
        assert words[len(listed):] == listed[:copy_len] and answer == " " + listed[copy_len]
        for inner_prompt, inner_answer in contained:
            assert prompt.startswith(inner_prompt + " ")
            query = inner_prompt.split(" ")[-1]
            assert inner_answer == " " + listed[listed.index(query) + 1]


def test_training_on_induction_alone_runs_and_repeat_lists_then_ask_for_another_task(tmp_path):
    tiny = ["--arch", "gpt2", "--tasks", "induction", "--examples", "200", "--layers", "1", "--width", "32",
            "--heads", "2", "--minutes", "0.02", "--eval-every", "5"]
    main([*tiny, "--contained-prompts", "--out", str(tmp_path / "model")])
    assert json.loads((tmp_path / "model" / "zoo_card.json").read_text())["steps"] >= 1
    with pytest.raises(ValueError, match="--repeat-size needs at least 10 vocabulary words outside the induction"):
        main([*tiny, "--repeat-size", "4"])


@pytest.mark.slow
def test_a_stopped_and_resumed_run_equals_the_uninterrupted_run(tmp_path):
    """4 steps == 2 steps + checkpoint + resume + 2 steps: same weights and the same validation history
    (data streams, optimizer, adaptive batch sizes and the lr schedule all continue where they stopped)."""
    from safetensors.torch import load_file

    from training.checkpoint import CheckpointError, load_checkpoint
    from training.zoo import checkpoint_args, parse_args

    tiny = ["--arch", "gpt2", "--tasks", "ioi", "arithmetic_subtraction", "--examples", "200", "--layers", "1", "--width", "32",
            "--heads", "2", "--eval-every", "3", "--steps", "4", "--adaptive", "--batch-size", "8",
            "--repeat-size", "4", "--copy-fraction", "0.5"]
    checkpoints = str(tmp_path / "ckpt")
    main([*tiny, "--out", str(tmp_path / "whole")])
    main([*tiny, "--max-steps", "2", "--checkpoint-dir", checkpoints, "--out", str(tmp_path / "first")])
    main([*tiny, "--resume", "--checkpoint-dir", checkpoints, "--out", str(tmp_path / "resumed")])
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    first_half = load_file(tmp_path / "first" / "model.safetensors")
    assert not all(torch.equal(whole[k], first_half[k]) for k in whole)  # the resumed steps did something

    def history(folder: str) -> list[dict]:
        card = json.loads((tmp_path / folder / "zoo_card.json").read_text())
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in card["history"]]

    assert history("whole") == history("resumed") and [h["step"] for h in history("resumed")] == [3, 4]
    card = json.loads((tmp_path / "resumed" / "zoo_card.json").read_text())
    assert card["steps"] == 4 and card["resumed_at_steps"] == [2]
    # a resumed run must compute the same thing: other arguments than the cap, threads and output are refused
    resumable = checkpoint_args(parse_args([*tiny, "--minutes", "9", "--resume", "--checkpoint-dir", checkpoints]))
    assert load_checkpoint(checkpoints, resumable)["step"] == 4  # the resumed run checkpointed where it stopped
    with pytest.raises(CheckpointError, match="other arguments .*lr: checkpoint 0.001, now 0.01"):
        load_checkpoint(checkpoints, checkpoint_args(parse_args([*tiny, "--lr", "0.01"])))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere", resumable)
    assert not list((tmp_path / "ckpt").glob("*.partial"))  # written atomically
