"""A word-level tokenizer covering every procedurally generated task.

Task prompts come from closed vocabularies (names, places, numbers, colours, letters, nouns), so a word
tokenizer is exact and tiny: every answer such as ``" Mary"``, ``" 75"`` or ``" C"`` is one token, which
keeps the embedded models' embedding matrices (and the committed weights) small.

With ``split_digits=True`` a number *inside* the text is read digit by digit (``"23 plus 45"`` ->
``2 3 plus 4 5``), while a number that ends the text, such as an arithmetic answer ``" 68"``, stays one
token. Models then see the digit structure of the operands (every digit pair of a held-out problem was seen
in training) and still answer with a single token, as the logit-difference metric requires.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mibench.data.example import Example

SPECIAL_TOKENS = ("[UNK]", "[PAD]", "[BOS]")
#: Matches the ``Whitespace`` pre-tokenizer: runs of word characters, or runs of other non-space characters.
WORD_PATTERN = re.compile(r"\w+|[^\w\s]+")
#: A digit followed (after any further digits) by a non-digit: every digit of a number that does not end
#: the text. Isolating these splits inner numbers into digits and leaves a final number whole.
INNER_DIGIT_PATTERN = r"\d(?=\d*\D)"


def pre_tokenizer(split_digits: bool = False):
    """The ``tokenizers`` pre-tokenizer: whitespace/punctuation words, optionally with inner numbers split."""
    if not split_digits:
        return pre_tokenizers.Whitespace()
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(INNER_DIGIT_PATTERN), behavior="isolated"),
        pre_tokenizers.Whitespace(),
    ])


def texts_of(examples: Iterable[Example]) -> list[str]:
    """Every prompt and answer, counterfactuals included."""
    texts: list[str] = []
    for example in examples:
        texts += [example.prompt, example.answer]
        for cf in example.counterfactuals.values():
            texts += [cf.prompt, cf.answer]
    return texts


def words_of(examples: Iterable[Example], *, split_digits: bool = False) -> set[str]:
    """Every token string of every prompt and answer (counterfactuals included) under the pre-tokenizer."""
    if not split_digits:
        return {word for text in texts_of(examples) for word in WORD_PATTERN.findall(text)}
    split = pre_tokenizer(True)
    return {piece for text in texts_of(examples) for piece, _ in split.pre_tokenize_str(text)}


def build_tokenizer(words: Iterable[str], *, split_digits: bool = False):
    """A ``PreTrainedTokenizerFast`` over ``words`` (sorted, so the ids are reproducible)."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words)):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizer(split_digits)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   bos_token="[BOS]")
