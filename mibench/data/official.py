"""Official MIB data: rows of the ``mib-bench/*`` Hugging Face datasets, converted to :class:`Example`s.

mibench generates every task procedurally by default (no network, fixed seeds). This module is the other
door: it reads MIB's published datasets, with MIB's column names, so results can be computed on exactly
the rows MIB scores. It needs the optional ``datasets`` package, imported only when data is loaded.

Where the rows come from, first match wins:

1. ``data_files=`` -- local JSON/JSONL/Parquet files with MIB's columns (a downloaded copy). A single
   path or list holds the one split asked for; a ``{split: files}`` dict holds several.
2. ``$MIBENCH_OFFICIAL_DATA_DIR/<task>/<split>.{jsonl,json,parquet}`` -- a folder of downloaded copies,
   for offline machines (and the tests): drop the files there and every caller, including
   ``load_task("arc_easy").examples("test")``, uses them without code changes.
3. The Hugging Face hub: the task card's ``official`` section (``hf_repo``, ``config``, ``revision``);
   split ``private_test`` reads the card's ``private_repo``, split ``test``. When the hub cannot be reached
   (no network, ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` without a cached copy) one
   :class:`OfficialDataUnavailableError` names the repo and the offline alternatives; a quick reachability
   probe makes that fail in seconds rather than after the hub client's retries.

Conversion follows MIB's column semantics (see the circuit-track notes, section 4, and the causal-track
notes, section 2) with these deliberate choices:

* **Answers are continuations of the prompt text**: a leading space is added unless the prompt already
  ends in whitespace. For MCQA/ARC that gives ``" C"`` where MIB's circuit-track loader tokenizes the
  bare label ``"C"`` -- a different token for BPE/SentencePiece tokenizers than the one a model predicts
  after ``"Answer:"``. The causal track's own causal model already uses ``" " + symbol``.
* **Every ``<kind>_counterfactual`` column becomes counterfactual ``kind``**; nothing is dropped (MIB's
  per-track ignore lists are a choice of *which* kinds to score, made by the caller).
* **Filters that need no tokenizer are applied here**: arithmetic keeps ``num_digit == 2`` rows; ARC
  keeps rows with exactly 4 choices. MIB's token-length filters depend on the model and are done by
  :mod:`mibench.data.tokenization` checks at evaluation time.
* **Rows keep the dataset's order** (MIB's causal track shuffles with seed 42 before capping; pass the
  whole split and sample downstream if that matters). ``n`` counts kept examples, after filtering.
* **Example ids carry the source row index**, ``"{task}/official-{split}/{row:06d}"``, so any example can
  be traced back to its hub row even after filtering.
* ``correct_symbol`` is the answer label *at the start of its option line* -- MIB's reference takes the
  first standalone capital equal to the label anywhere in the prompt, which lands inside ARC questions
  that contain, say, the word "A" (causal-track notes, section 8, item 8).

A row that lacks a column the conversion needs raises :class:`OfficialDataError` naming the dataset, the
row index and the (dotted) column. Extra columns are ignored: MIB's rows carry provenance fields
(``idx``, ``arc_id``, ``dataset`` ...) that no example needs.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mibench.data.card import OfficialDataset
from mibench.data.example import Counterfactual, Example, Span
from mibench.data.splits import check_split
from mibench.data.task import Task
from mibench.errors import MibenchError, close_matches
from mibench.tasks.ravel.entities import ATTRIBUTES

OFFICIAL_DATA_DIR_ENV = "MIBENCH_OFFICIAL_DATA_DIR"
log = logging.getLogger("mibench")
#: A hub commit id (what ``datasets`` names a hub dataset's cache folder after).
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: (repo, config) -> the commit an unpinned hub read resolved to (None: not determinable), per process.
_RESOLVED: dict[tuple[str, str | None], str | None] = {}
CF_SUFFIX = "_counterfactual"
_LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".jsonl.gz", ".json.gz")
_HUB_PROBE_TIMEOUT_S = 3.0


class OfficialDataError(MibenchError, ValueError):
    """An official-data row or file that cannot be converted; says which dataset, row and column."""


class OfficialDataUnavailableError(MibenchError, ConnectionError):
    """The official data could not be fetched (hub unreachable, offline mode, no access)."""


# ----------------------------------------------------------------------------------------- row access
@dataclass(frozen=True)
class Row:
    """One dataset row (or a nested dict of one), able to say exactly where a missing value was expected.

    ``prefix`` is the dotted path of a nested mapping (``"s2_io_flip_counterfactual."``), so errors name
    the column as a user would look it up in the dataset viewer.
    """

    source: str
    index: int
    data: Mapping[str, Any]
    prefix: str = ""

    def error(self, column: str, problem: str) -> OfficialDataError:
        return OfficialDataError(f"{self.source}, row {self.index}, column {self.prefix}{column}: {problem}")

    def has(self, column: str) -> bool:
        """Present and not null (Arrow fills columns a row lacks with nulls, so the two mean the same)."""
        return self.data.get(column) is not None

    def get(self, column: str) -> Any:
        value = self.data.get(column)
        if value is None:
            problem = "missing" if column not in self.data else "is null"
            known = ", ".join(sorted(map(str, self.data))) or "none"
            raise self.error(column, f"{problem} (columns present: {known})")
        return value

    def text(self, column: str) -> str:
        value = self.get(column)
        if not isinstance(value, str) or not value:
            raise self.error(column, f"expected a non-empty string, got {value!r}")
        return value

    def integer(self, column: str) -> int:
        value = self.get(column)
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.error(column, f"expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise self.error(column, f"expected an integer, got {value!r}") from None

    def sub(self, column: str) -> Row:
        value = self.get(column)
        if not isinstance(value, Mapping):
            raise self.error(column, f"expected a mapping, got {type(value).__name__}")
        return Row(self.source, self.index, value, f"{self.prefix}{column}.")

    def strings(self, column: str) -> list[str]:
        value = self.get(column)
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise self.error(column, f"expected a list, got {type(value).__name__}")
        return [str(item) for item in value]

    def counterfactual_columns(self) -> list[str]:
        return [str(c) for c in self.data if str(c).endswith(CF_SUFFIX)]


# ----------------------------------------------------------------------------------- shared helpers
def continuation(prompt: str, answer: str) -> str:
    """``answer`` as it follows ``prompt`` in text: with a separating space unless the prompt ends in one."""
    return answer if prompt[-1:].isspace() else " " + answer


def last_word_span(text: str) -> Span:
    """The final whitespace-separated word (``"to"``, ``"Answer:"``): where the answer is predicted."""
    match = re.search(r"\S+(?=\s*$)", text)
    if match is None:
        raise ValueError("empty prompt")
    return match.start(), match.end()


def word_spans(text: str, word: str, *, start: int = 0, ignore_case: bool = False) -> list[Span]:
    """Every whole-word occurrence of ``word`` at or after ``start`` (``"Ann"`` does not match ``"Anna"``)."""
    if not word:
        return []
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE if ignore_case else 0)
    return [m.span() for m in pattern.finditer(text, start)]


def option_symbol_span(prompt: str, label: str, choice_text: str | None = None) -> Span | None:
    """The span of ``label`` where it opens an option line (``"C. brown"``, ``"3) ten"``).

    Anchoring at the start of a line avoids matching the same letter inside the question. If several
    lines start with the label (a malformed prompt), the one whose text matches the choice wins.
    """
    pattern = rf"(?m)^[ \t]*({re.escape(label)})[.)]"
    matches = list(re.finditer(pattern, prompt))
    if not matches:
        return None
    if choice_text is not None and len(matches) > 1:
        for match in matches:
            line_end = prompt.find("\n", match.end())
            line = prompt[match.end(): len(prompt) if line_end < 0 else line_end]
            if line.strip() == choice_text.strip():
                return match.span(1)
    return matches[0].span(1)


# ---------------------------------------------------------------------------------------------- IOI
# Which clean name each counterfactual kind expects, for rows whose counterfactual carries no
# choices/answerKey/metadata of its own: (answer, other name). Kinds with new names must carry their own.
_IOI_KIND_NAMES: dict[str, tuple[str, str]] = {
    "s2_io_flip": ("subject", "indirect_object"),
    "s1_io_flip": ("indirect_object", "subject"),
    "s1_ioi_flip_s2_ioi_flip": ("subject", "indirect_object"),
    "abc": ("indirect_object", "subject"),  # no name repeats: no single right answer; keep the clean one
}


def ioi_spans(row: Row, prompt: str, answer_name: str, other_name: str, *, column: str) -> dict[str, Span]:
    """IO = first mention of the answer name; S1/S2 = first and last mention of the other; END = last word.

    S2 is left out when the other name occurs only once (the ``abc`` counterfactual repeats no name).
    """
    io = word_spans(prompt, answer_name)
    s = word_spans(prompt, other_name)
    if not io:
        raise row.error(column, f"name {answer_name!r} does not occur in the prompt {prompt!r}")
    if not s:
        raise row.error(column, f"name {other_name!r} does not occur in the prompt {prompt!r}")
    spans = {"IO": io[0], "S1": s[0]}
    if len(s) > 1:
        spans["S2"] = s[-1]
    spans["END"] = last_word_span(prompt)
    spans["N1"], spans["N2"] = sorted((io[0], s[0]))  # the two names in text order (the span schema's anchors)
    return spans


def ioi_variables(prompt: str, answer_name: str, other_name: str) -> dict[str, Any]:
    """``output_token`` and ``output_position`` (0 if the answer is the first-mentioned of the two names),
    and the causal model's inputs (:mod:`mibench.tasks.ioi.causal`) as the generator records them:
    ``names`` (the two names in order of first mention) and ``giver`` (the S2 name, i.e. the other name when
    it is mentioned a second time; absent otherwise, e.g. in an ``abc`` prompt, which has no single answer)."""
    answer_at, other_at = word_spans(prompt, answer_name), word_spans(prompt, other_name)
    answer_first = answer_at[0][0] < other_at[0][0]
    variables: dict[str, Any] = {"output_token": answer_name, "output_position": 0 if answer_first else 1,
                                 "names": [answer_name, other_name] if answer_first else [other_name, answer_name]}
    if len(other_at) > 1:
        variables["giver"] = other_name
    return variables


def _ioi_counterfactual_names(cf: Row, kind: str, metadata: Row) -> tuple[str, str]:
    """(answer, other name) of one counterfactual: its own metadata, else its choices, else the kind's rule."""
    if cf.has("metadata"):
        own = cf.sub("metadata")
        if own.has("indirect_object") and own.has("subject"):
            return own.text("indirect_object"), own.text("subject")
    if cf.has("choices") and cf.has("answerKey"):
        choices = cf.strings("choices")
        key = _choice_index(cf, choices)
        others = [name for name in choices if name != choices[key]]
        if len(others) != 1:
            raise cf.error("choices", f"expected two distinct names, got {choices!r}")
        return choices[key], others[0]
    if kind not in _IOI_KIND_NAMES:
        raise cf.error("choices", f"counterfactual kind {kind!r} introduces new names, so its row must carry "
                                  "choices and answerKey (or metadata) to name its answer")
    answer_field, other_field = _IOI_KIND_NAMES[kind]
    return metadata.text(answer_field), metadata.text(other_field)


def ioi_example(row: Row, example_id: str) -> Example:
    """``mib-bench/ioi``: answer ``" " + metadata.indirect_object``; the subject is mentioned twice."""
    prompt = row.text("prompt")
    metadata = row.sub("metadata")
    io, s = metadata.text("indirect_object"), metadata.text("subject")
    spans = ioi_spans(row, prompt, io, s, column="prompt")
    if "S2" not in spans:
        raise row.error("prompt", f"the subject {s!r} should be mentioned twice in {prompt!r}")
    counterfactuals = {}
    for column in row.counterfactual_columns():
        kind, cf = column[: -len(CF_SUFFIX)], row.sub(column)
        cf_prompt = cf.text("prompt")
        answer_name, other_name = _ioi_counterfactual_names(cf, kind, metadata)
        counterfactuals[kind] = Counterfactual(
            prompt=cf_prompt,
            answer=continuation(cf_prompt, answer_name),
            spans=ioi_spans(cf, cf_prompt, answer_name, other_name, column="prompt"),  # checks both names occur
            variables=ioi_variables(cf_prompt, answer_name, other_name),
        )
    return Example(
        id=example_id,
        prompt=prompt,
        answer=continuation(prompt, io),
        counterfactuals=counterfactuals,
        spans=spans,
        variables={**ioi_variables(prompt, io, s), "io": io, "s": s},
        template=row.data.get("template"),
    )


# --------------------------------------------------------------------------------------- arithmetic
_OPERATORS = {"+": ("+", "plus"), "-": ("-", "\u2212", "minus")}


def arithmetic_spans(row: Row, prompt: str, op1: int, op2: int) -> dict[str, Span]:
    """op1/op2: the operands as written (op2 searched after op1, so ``12 plus 12`` works); END: last word."""
    first = word_spans(prompt, str(op1))
    if not first:
        raise row.error("operand1", f"{op1} does not occur in the prompt {prompt!r}")
    second = word_spans(prompt, str(op2), start=first[0][1])
    if not second:
        raise row.error("operand2", f"{op2} does not occur after operand1 in the prompt {prompt!r}")
    return {"op1": first[0], "op2": second[0], "op2_last": second[0], "END": last_word_span(prompt)}


def arithmetic_variables(op1: int, op2: int, result: int, operator: str) -> dict[str, int]:
    """Operand digits, the result, and ``ones_carry``: the addition carry / subtraction borrow."""
    ones_carry = (op1 % 10 + op2 % 10 >= 10) if operator == "+" else (op1 % 10 < op2 % 10)
    return {"op1_tens": op1 // 10, "op1_ones": op1 % 10, "op2_tens": op2 // 10, "op2_ones": op2 % 10,
            "ones_carry": int(ones_carry), "result": result}


def _arithmetic_prompt(row: Row, operator: str) -> tuple[str, str, dict[str, Span], dict[str, int]]:
    """Prompt, answer, spans and variables of one problem (a row or one of its counterfactuals)."""
    prompt = row.text("prompt")
    op1, op2, label = row.integer("operand1"), row.integer("operand2"), row.integer("label")
    return (prompt, continuation(prompt, str(label)), arithmetic_spans(row, prompt, op1, op2),
            arithmetic_variables(op1, op2, label, operator))


def arithmetic_example(row: Row, example_id: str, *, operator: str) -> Example | None:
    """``mib-bench/arithmetic_{addition,subtraction}``: two-digit rows only, answer ``" " + str(label)``."""
    if row.integer("num_digit") != 2:
        return None
    row_operator = str(row.get("operator")).strip()
    if row_operator not in _OPERATORS[operator]:
        raise row.error("operator", f"expected {operator!r} for this task, got {row_operator!r}")
    prompt, answer, spans, variables = _arithmetic_prompt(row, operator)
    counterfactuals = {}
    for column in row.counterfactual_columns():
        cf_prompt, cf_answer, cf_spans, cf_variables = _arithmetic_prompt(row.sub(column), operator)
        counterfactuals[column[: -len(CF_SUFFIX)]] = Counterfactual(cf_prompt, cf_answer, cf_variables, cf_spans)
    return Example(example_id, prompt, answer, counterfactuals, spans, variables,
                   template=row.data.get("template"))


# --------------------------------------------------------------------------------- multiple choice
def _choice_index(row: Row, labels: list[str]) -> int:
    """``answerKey`` as an index into the options; MIB stores an int, a label string is accepted too."""
    raw = row.get("answerKey")
    if isinstance(raw, str) and raw in labels and not raw.isdigit():
        return labels.index(raw)
    key = row.integer("answerKey")
    if not 0 <= key < len(labels):
        raise row.error("answerKey", f"index {key} is outside the {len(labels)} options {labels!r}")
    return key


def choice_spans(row: Row, prompt: str, label: str, choice_text: str) -> dict[str, Span]:
    """``correct_symbol`` (the label opening the correct option line), the period after it, and END."""
    symbol = option_symbol_span(prompt, label, choice_text)
    if symbol is None:
        raise row.error("prompt", f"no option line starts with the answer label {label!r} in {prompt!r}")
    spans = {"correct_symbol": symbol}
    if prompt[symbol[1]: symbol[1] + 1] == ".":
        spans["correct_symbol_period"] = (symbol[1], symbol[1] + 1)
    spans["END"] = last_word_span(prompt)
    return spans


def _color_question_spans(prompt: str, color: str) -> dict[str, Span]:
    """Copy-colors only: the stated colour and the object in the question's first sentence, when found.

    Best effort (the prompts are templated but not all alike); roles that cannot be found are left out.
    """
    spans: dict[str, Span] = {}
    options_start = re.search(r"(?m)^[ \t]*\w{1,3}[.)][ \t]", prompt)
    question = prompt[: options_start.start()] if options_start else prompt
    color_at = word_spans(question, color)
    if color_at:
        spans["color"] = color_at[0]
    asked = re.search(r"What colou?r (?:is|are) (?:the |a |an )?([^?]+)\?", question)
    if asked:
        object_at = word_spans(question, asked.group(1).strip(), ignore_case=True)
        if object_at:
            spans["object"] = object_at[0]
    return spans


def _choice_prompt(row: Row, *, with_content: bool) -> tuple[str, str, dict[str, Span], dict[str, Any]]:
    """Prompt, answer, spans and variables of one multiple-choice prompt (a row or a counterfactual)."""
    prompt = row.text("prompt")
    choices = row.sub("choices")
    labels, texts = choices.strings("label"), choices.strings("text")
    if len(labels) != len(texts):
        raise choices.error("text", f"{len(texts)} texts for {len(labels)} labels")
    key = _choice_index(row, labels)
    answer = continuation(prompt, labels[key])
    spans = choice_spans(row, prompt, labels[key], texts[key])
    if with_content:
        spans.update(_color_question_spans(prompt, texts[key]))
    # the causal models' inputs (mibench.tasks.mcqa.causal): MCQA's question states the correct option's
    # colour, so the pointer is computed from it; ARC's question is opaque, so the key is an input
    variables: dict[str, Any] = {"answer_pointer": key, "answer": answer, "symbols": labels, "choices": texts,
                                 "answer_key": key}
    if with_content:
        variables["color"] = texts[key]
    return prompt, answer, spans, variables


def choice_example(row: Row, example_id: str, *, num_choices: int | None, with_content: bool) -> Example | None:
    """MCQA / ARC: answer = the correct option's label as a continuation (``" C"``); ``None`` filters out.

    ``num_choices`` keeps only rows with exactly that many options (ARC: 4, as MIB does).
    """
    if num_choices is not None and len(row.sub("choices").strings("label")) != num_choices:
        return None
    prompt, answer, spans, variables = _choice_prompt(row, with_content=with_content)
    counterfactuals = {}
    for column in row.counterfactual_columns():
        cf_prompt, cf_answer, cf_spans, cf_variables = _choice_prompt(row.sub(column), with_content=with_content)
        counterfactuals[column[: -len(CF_SUFFIX)]] = Counterfactual(cf_prompt, cf_answer, cf_variables, cf_spans)
    return Example(example_id, prompt, answer, counterfactuals, spans, variables)


# -------------------------------------------------------------------------------------------- RAVEL
RAVEL_WIKIPEDIA = "wikipedia"  # the queried "attribute" of MIB's Wikipedia-style sentences: no answer


def _ravel_prompt(row: Row) -> tuple[str, str | None, dict[str, Span], dict[str, Any]]:
    """Prompt, label (``None`` for a Wikipedia sentence), spans and variables of one RAVEL prompt.

    ``entity``: the first whole-word mention of the row's entity (MIB's current code finds it with a regex
    search); ``END``: the last word. Only the queried attribute's value is known from a row (its label), so
    ``attributes`` holds that one value; the causal model refuses labels that need another.
    """
    prompt, entity, attribute = row.text("prompt"), row.text("entity"), row.text("attribute")
    if attribute not in (*ATTRIBUTES, RAVEL_WIKIPEDIA):
        raise row.error("attribute", f"expected one of {', '.join((*ATTRIBUTES, RAVEL_WIKIPEDIA))}, "
                                     f"got {attribute!r}")
    mentions = word_spans(prompt, entity)
    if not mentions:
        raise row.error("entity", f"{entity!r} does not occur in the prompt {prompt!r}")
    label = None if attribute == RAVEL_WIKIPEDIA else row.text("label")
    known = {} if label is None else {attribute: label}
    variables: dict[str, Any] = {"entity": entity, "queried_attribute": attribute, "attributes": known, **known}
    if label is not None:
        variables["answer"] = label
    if row.has("template"):
        variables["template"] = str(row.get("template"))
    return prompt, label, {"entity": mentions[0], "END": last_word_span(prompt)}, variables


def ravel_example(row: Row, example_id: str) -> Example | None:
    """``mib-bench/ravel``: answer = the label of the queried attribute, as a continuation of the prompt.

    A row whose own prompt is a Wikipedia sentence (no attribute asked, no answer) is filtered out: nothing
    can be scored on it. Counterfactual ``wikipedia`` prompts are kept without an answer (``has_answer``
    false), like IOI's ``abc``.
    """
    prompt, label, spans, variables = _ravel_prompt(row)
    if label is None:
        return None
    answer = continuation(prompt, label)
    counterfactuals = {}
    for column in row.counterfactual_columns():
        cf_prompt, cf_label, cf_spans, cf_variables = _ravel_prompt(row.sub(column))
        counterfactuals[column[: -len(CF_SUFFIX)]] = Counterfactual(
            prompt=cf_prompt, answer=answer if cf_label is None else continuation(cf_prompt, cf_label),
            variables=cf_variables, spans=cf_spans, has_answer=cf_label is not None)
    return Example(example_id, prompt, answer, counterfactuals, spans, variables, template=variables.get("template"))


# --------------------------------------------------------------------------------------- task table
Converter = Callable[[Row, str], "Example | None"]


@dataclass(frozen=True)
class OfficialFormat:
    """How one task's official rows become examples, and whether mibench can also generate the task."""

    convert: Converter
    generated: bool = True


FORMATS: dict[str, OfficialFormat] = {
    "ioi": OfficialFormat(ioi_example),
    "arithmetic_addition": OfficialFormat(partial(arithmetic_example, operator="+")),
    "arithmetic_subtraction": OfficialFormat(partial(arithmetic_example, operator="-")),
    "mcqa": OfficialFormat(partial(choice_example, num_choices=None, with_content=True)),
    "arc_easy": OfficialFormat(partial(choice_example, num_choices=4, with_content=False), generated=False),
    "arc_challenge": OfficialFormat(partial(choice_example, num_choices=4, with_content=False), generated=False),
    "ravel": OfficialFormat(ravel_example),
}


# ------------------------------------------------------------------------------------------- loading
def load_official(
    task_id: str,
    split: str,
    *,
    n: int | None = None,
    revision: str | None = None,
    data_files: str | os.PathLike[str] | list | dict | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    config: str | None = None,
) -> list[Example]:
    """The official MIB rows of ``task_id``/``split`` as examples (the first ``n`` kept, or all).

    Sources, first match wins: ``data_files``; a local copy under ``data_dir`` (default
    ``$MIBENCH_OFFICIAL_DATA_DIR``), ``<task>/<split>.jsonl`` (or ``.json``/``.parquet``), or
    ``<task>/<config>/<split>.jsonl`` for a config other than the card's; the hub repo named by the task
    card (``revision`` and ``config`` override the card's: MCQA's ``2_answer_choices`` ... configs).
    """
    fmt = _format(task_id)
    check_split(split)
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if data_files is None:
        data_files = _local_copy(task_id, split, data_dir, config)
    if data_files is not None:
        label, rows = _local_rows(task_id, split, data_files)
    else:
        label, rows = _hub_rows(task_id, split, revision, config)
    return convert_rows(task_id, split, rows, fmt.convert, source=label, n=n)


def convert_rows(task_id: str, split: str, rows: Iterable[Mapping[str, Any]], convert: Converter, *,
                 source: str, n: int | None = None) -> list[Example]:
    """Convert rows in order until ``n`` examples are kept; ids carry the source row index."""
    out: list[Example] = []
    for index, data in enumerate(rows):
        if n is not None and len(out) >= n:
            break
        example = convert(Row(source, index, data), f"{task_id}/official-{split}/{index:06d}")
        if example is not None:
            out.append(example)
    return out


def _format(task_id: str) -> OfficialFormat:
    if task_id not in FORMATS:
        close = close_matches(task_id, FORMATS)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise MibenchError(f"task {task_id!r} has no official MIB dataset{hint} "
                           f"(tasks with one: {', '.join(sorted(FORMATS))})")
    return FORMATS[task_id]


def _official(task_id: str) -> OfficialDataset:
    from mibench.data.registry import get_card

    card = get_card(task_id)
    if card.official is None:
        raise MibenchError(f"task card {task_id!r} has no 'official' section naming its MIB dataset")
    return card.official


def _local_copy(task_id: str, split: str, data_dir: str | os.PathLike[str] | None = None,
                config: str | None = None) -> Path | None:
    """The local copy of ``task_id``/``split`` under ``data_dir`` (default ``$MIBENCH_OFFICIAL_DATA_DIR``), if
    any: ``<task>/<config>/<split>.<ext>`` for a config other than the card's, else ``<task>/<split>.<ext>``.

    An explicit ``data_dir`` without the file is an error (the user pointed at it); the variable is a fallback.
    """
    root = data_dir if data_dir is not None else os.environ.get(OFFICIAL_DATA_DIR_ENV)
    if not root:
        return None
    default_config = _official(task_id).config
    folder = Path(root) / task_id
    if config is not None and config != default_config:
        folder = folder / config
    for suffix in _LOCAL_SUFFIXES:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    if data_dir is not None:
        raise OfficialDataError(f"{data_dir}: no local copy of task {task_id!r}, split {split!r} (expected "
                                f"{folder / split}.jsonl, .json or .parquet)")
    return None


def _builder_for(paths: list[str]) -> str:
    kinds = {"parquet" if p.endswith(".parquet") else "json" if re.search(r"\.jsonl?(\.gz)?$", p) else "?"
             for p in paths}
    if kinds == {"parquet"} or kinds == {"json"}:
        return kinds.pop()
    raise OfficialDataError(f"official data files {paths}: expected all .jsonl/.json or all .parquet files")


def _local_rows(task_id: str, split: str, data_files: Any) -> tuple[str, Iterable[Mapping[str, Any]]]:
    """Rows of local files; a ``{split: files}`` dict is indexed by ``split``, anything else is that split."""
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise OfficialDataError(f"data_files has no entry for split {split!r} (it has {sorted(data_files)})")
        data_files = data_files[split]
    paths = [os.fspath(p) for p in (data_files if isinstance(data_files, (list, tuple)) else [data_files])]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise OfficialDataError(f"official data files not found: {', '.join(missing)}")
    label = ", ".join(paths)
    try:
        repo = _official(task_id).hf_repo
        label += f" (local copy of {repo})"
    except MibenchError:
        pass
    datasets = _import_datasets()
    try:
        rows = datasets.load_dataset(_builder_for(paths), data_files=paths, split="train")
    except OfficialDataError:
        raise
    except Exception as exc:  # a file datasets cannot parse: name it, keep the cause
        raise OfficialDataError(f"{label}: cannot read as a dataset ({type(exc).__name__}: {exc})") from exc
    return label, rows


def _hub_rows(task_id: str, split: str, revision: str | None,
              config: str | None = None) -> tuple[str, Iterable[Mapping[str, Any]]]:
    official = _official(task_id)
    config = config or official.config
    repo, hub_split = official.hf_repo, split
    if split == "private_test":
        if official.private_repo is None:
            raise MibenchError(f"task {task_id!r}: its card names no private_repo for the private_test split")
        repo, hub_split = official.private_repo, "test"
    revision = revision or official.revision
    label = repo + (f" (config {config})" if config else "") + (f"@{revision}" if revision else "")
    label += f", split {hub_split}"
    datasets = _import_datasets()
    if not _offline_mode():
        reason = _hub_unreachable()
        if reason is not None:
            raise _unavailable(task_id, split, repo, f"the Hugging Face hub is unreachable ({reason})")
    try:
        rows = datasets.load_dataset(repo, config, split=hub_split, revision=revision)
    except Exception as exc:
        translated = _translate_hub_error(exc, task_id, split, repo)
        if translated is None:
            raise
        raise translated from None  # the message carries the cause; the client's traceback only buries it
    if revision is None:
        _note_unpinned(repo, config, resolved_commit(rows))
    return label, rows


def resolved_commit(rows: Any) -> str | None:
    """The hub commit ``rows`` were read at, or None. ``datasets`` caches a hub dataset in a folder named after
    the commit it resolved (``.../<config>/0.0.0/<commit>/...arrow``)."""
    for entry in getattr(rows, "cache_files", None) or []:
        filename = entry.get("filename", "") if isinstance(entry, Mapping) else ""
        commit = next((part for part in reversed(Path(filename).parts) if _COMMIT.fullmatch(part)), None)
        if commit is not None:
            return commit
    return None


def _note_unpinned(repo: str, config: str | None, commit: str | None) -> None:
    """Warn (once per dataset and process) that an unpinned read takes whatever the hub serves, and remember
    the commit it resolved to (:func:`resolved_revision`)."""
    key = (repo, config)
    known = _RESOLVED.get(key)
    _RESOLVED[key] = commit or known
    if key in _WARNED:
        return
    _WARNED.add(key)
    resolved = (f"this run read commit {commit}" if commit else
                "the commit it read could not be determined (datasets did not name it)")
    log.warning("%s: the data is unpinned -- the task card's official.revision is empty and no --data-revision was "
                "given, so the run reads whatever the hub serves today; %s. Pass --data-revision <commit> for a "
                "reproducible run", repo, resolved)


_WARNED: set[tuple[str, str | None]] = set()


def resolved_revision(task_id: str, config: str | None = None) -> str | None:
    """The hub commit an unpinned official read of ``task_id`` resolved to in this process (None: pinned, not
    read from the hub, or not determinable)."""
    official = _official(task_id)
    return _RESOLVED.get((official.hf_repo, config or official.config))


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise MibenchError("loading official MIB data needs the 'datasets' package: "
                           "pip install 'mibench[official]' (or pip install datasets)") from None
    return datasets


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("HF_DATASETS_OFFLINE"))


def _hub_unreachable() -> str | None:
    """Why the hub's host cannot be reached within a few seconds, or ``None`` if it can (or a proxy is set).

    Without this probe an air-gapped machine waits through the hub client's retry back-off (tens of
    seconds of "Retrying in 8s" warnings) before failing.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # the proxy, not us, decides what is reachable
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


def _unavailable(task_id: str, split: str, repo: str, why: str) -> OfficialDataUnavailableError:
    generated = FORMATS[task_id].generated
    alternatives = []
    if generated:
        alternatives.append(f"use mibench's procedurally generated split, the default "
                            f"(mibench.data.registry.load_task({task_id!r}).examples({split!r}))")
    alternatives += [
        f"pass data_files= pointing at a downloaded copy of {repo} (JSONL or Parquet with MIB's columns)",
        f"or set {OFFICIAL_DATA_DIR_ENV} to a folder holding {task_id}/{split}.jsonl",
    ]
    if os.environ.get(OFFICIAL_DATA_DIR_ENV):
        alternatives[-1] += f" (it is set, to {os.environ[OFFICIAL_DATA_DIR_ENV]!r}, but holds no such file)"
    if not _offline_mode():
        alternatives.append("or set HF_DATASETS_OFFLINE=1 to use a copy cached by an earlier download")
    return OfficialDataUnavailableError(
        f"cannot load the official MIB dataset {repo} for task {task_id!r}, split {split!r}: {why}. "
        f"Offline alternatives: {'; '.join(alternatives)}."
    )


def _hub_error_classes(*names: str) -> tuple[type, ...]:
    """Hub client exception classes by name, wherever this version of huggingface_hub defines them."""
    import huggingface_hub

    modules = [getattr(huggingface_hub, "errors", None), getattr(huggingface_hub, "utils", None)]
    found = {getattr(m, name, None) for name in names for m in modules if m is not None}
    return tuple(cls for cls in found if isinstance(cls, type))


def _translate_hub_error(exc: Exception, task_id: str, split: str, repo: str) -> Exception | None:
    """One readable error for the ways a hub load fails; ``None`` for anything unrecognised (re-raised as is)."""
    try:
        from datasets.exceptions import DatasetNotFoundError
    except ImportError:  # pragma: no cover - very old datasets
        not_found: tuple[type, ...] = ()
    else:
        not_found = (DatasetNotFoundError,)
    if isinstance(exc, (ConnectionError, TimeoutError, *_hub_error_classes("LocalEntryNotFoundError"))):
        return _unavailable(task_id, split, repo, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, _hub_error_classes("RevisionNotFoundError")):
        return OfficialDataUnavailableError(f"official MIB dataset {repo}: revision not found ({exc})")
    if isinstance(exc, (*not_found, *_hub_error_classes("RepositoryNotFoundError", "GatedRepoError"))):
        gated = (" MIB's private test sets are gated: request access on the hub and log in (hf auth login)."
                 if split == "private_test" else "")
        return OfficialDataUnavailableError(f"official MIB dataset {repo} not found or not accessible "
                                            f"({type(exc).__name__}: {exc}).{gated}")
    return None


# --------------------------------------------------------------------------------- official-only tasks
def sampled(load: Callable[..., list[Example]], n: int | None, seed: int | None) -> list[Example]:
    """``load(n=n)`` (the first ``n`` rows); with ``seed``, every row shuffled by ``random.Random(seed)``
    and the first ``n`` of those, like MIB's shuffled loaders (they use seed 42)."""
    if seed is None:
        return load(n=n)
    rows = load()
    random.Random(seed).shuffle(rows)
    return rows if n is None else rows[:n]


class OfficialTask(Task):
    """A task whose only data is MIB's official dataset (no procedural generator): ARC-Easy/-Challenge.

    ``examples`` reads the rows through :func:`load_official`; ``draw`` does not exist for these tasks.
    The card's split sizes are nominal (MIB's row counts); the data decides how many examples there are.
    """

    procedural = False

    def examples(self, split: str, n: int | None = None, *, seed: int | None = None) -> list[Example]:
        """The first ``n`` official examples of ``split`` (default: all), in the dataset's order.

        With ``seed``, a deterministic random sample of ``n`` (or a shuffle of all) instead: every row is
        loaded and shuffled with ``random.Random(seed)``, like MIB's shuffled loaders (they use seed 42).
        """
        return sampled(partial(load_official, self.card.id, split), n, seed)

    def draw(self, rng: random.Random) -> tuple[str, Example]:
        raise NotImplementedError(f"task {self.card.id!r} has no procedural generator; it uses official data only")



# ------------------------------------------------------------------------------ official data for any task
@dataclass(frozen=True)
class OfficialSource:
    """Where a run reads official rows from: the hub (``revision``/``config`` override the card's) or a local
    copy under ``data_dir`` (see :func:`load_official`)."""

    data_dir: str | None = None
    config: str | None = None
    revision: str | None = None


class OfficialData:
    """A task whose examples are read from its official MIB dataset instead of generated.

    Everything else -- the card, the causal model, the span schema -- is the task's own, so both tracks run
    unchanged on the official rows (``mibench evaluate --data official``).
    """

    def __init__(self, task: Task, source: OfficialSource) -> None:
        _format(task.card.id)  # a task without an official dataset is refused here, by name
        self.task = task
        self.source = source

    def examples(self, split: str, n: int | None = None, *, seed: int | None = None) -> list[Example]:
        """The first ``n`` official examples of ``split`` in the dataset's order (with ``seed``: a seeded sample)."""
        return sampled(partial(load_official, self.task.card.id, split, data_dir=self.source.data_dir,
                               config=self.source.config, revision=self.source.revision), n, seed)

    @property
    def data_revision(self) -> str | None:
        """The dataset revision the examples come from: ``--data-revision``, else the card's, else the commit an
        unpinned hub read resolved to (None before any read, for local copies, or when undeterminable)."""
        official = _official(self.task.card.id)
        return (self.source.revision or official.revision
                or resolved_revision(self.task.card.id, self.source.config))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)
