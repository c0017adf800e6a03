"""(base, counterfactual) pairs for one causal variable: labels, tokens, positions, and LM filtering.

A pair is an example's clean prompt (the *base*) and one of its counterfactual prompts (the *source*).
Its label is the causal model's output after the interchange (:meth:`CausalModel.interchange_label`).
Answers may span several tokens: the base sequence is the prompt followed by all but the last label token
(teacher forcing), and a pair counts as correct only if the model's argmax predicts *every* label token,
which is exactly "greedy decoding produces the label". Intervention positions always lie in the prompt.

Token positions are found by role on each prompt separately (the last token of the role's character
span), so a role that moves between base and source is still aligned by meaning, not by index. Padding
is on the right, so these are the unpadded indices.

Filtering follows MIB: a pair is kept only if the unmodified model answers both its base and its source
prompt correctly, since an intervention cannot be judged on a model that does not perform the task.
"Correctly" means the *causal model's* output on that prompt (``CausalModel.output`` of its recorded
variables), not the answer string the data carries: the filter asks whether the model implements the
algorithm being localised. On the procedural data the two agree; official rows or hand-made pairs may not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mibench.causal.causal_model import CausalModel, CausalModelError
from mibench.data.example import Example
from mibench.data.padding import pad_token_id, right_pad
from mibench.data.tokenization import TokenizationError, encode, role_positions
from mibench.engine.residual import ResidualRunner


@dataclass
class Sequences:
    """Right-padded token sequences with the positions where each answer token is read."""

    ids: Tensor  # [N, T]
    mask: Tensor  # [N, T]
    read_positions: Tensor  # [N, m]: logits at these positions predict the answer tokens
    answer_ids: Tensor  # [N, m]
    answer_mask: Tensor  # [N, m] bool: which of the m slots are real answer tokens

    def __len__(self) -> int:
        return self.ids.shape[0]

    def select(self, rows: Tensor) -> Sequences:
        return Sequences(self.ids[rows], self.mask[rows], self.read_positions[rows], self.answer_ids[rows],
                         self.answer_mask[rows])


@dataclass
class PairSet:
    """Tokenised pairs of one counterfactual kind (or a union of kinds for training)."""

    kind: str
    base: Sequences  # base prompt + label tokens (teacher forcing); answers = the labels
    source: Sequences  # source prompt alone (its answer slots are unused)
    base_positions: dict[str, Tensor]  # role -> [N]
    source_positions: dict[str, Tensor]
    example_ids: list[str]
    labels: list[str]
    dropped: Counter = field(default_factory=Counter)
    #: The causal model's output on each unmodified base prompt (what :func:`own_answers` checks the model
    #: against); empty for a set built by hand without a causal model.
    base_outputs: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.base)

    def select(self, rows: Tensor) -> PairSet:
        keep = rows.tolist()
        return PairSet(self.kind, self.base.select(rows), self.source.select(rows),
                       {r: p[rows] for r, p in self.base_positions.items()},
                       {r: p[rows] for r, p in self.source_positions.items()},
                       [self.example_ids[i] for i in keep], [self.labels[i] for i in keep], Counter(self.dropped),
                       [self.base_outputs[i] for i in keep] if self.base_outputs else [])

    @staticmethod
    def concatenate(sets: list[PairSet], kind: str) -> PairSet:
        """One set from several kinds (training mixes every kind); sequences are re-padded."""
        dropped: Counter = Counter()
        for s in sets:
            dropped.update(s.dropped)
        return PairSet(
            kind, _cat_sequences([s.base for s in sets]), _cat_sequences([s.source for s in sets]),
            {r: torch.cat([s.base_positions[r] for s in sets]) for r in sets[0].base_positions},
            {r: torch.cat([s.source_positions[r] for s in sets]) for r in sets[0].source_positions},
            [i for s in sets for i in s.example_ids], [lab for s in sets for lab in s.labels], dropped,
            [out for s in sets for out in s.base_outputs] if all(len(s.base_outputs) == len(s) for s in sets) else [],
        )


def build_pairs(examples: list[Example], kind: str, variable: str, causal_model: CausalModel, tokenizer,
                roles: list[str]) -> PairSet:
    """Pairs of ``kind`` with their interchange labels; pairs that cannot be tokenised are dropped and
    counted (e.g. a label the tokenizer does not know).

    The source sequence carries the causal model's output on the source prompt, and ``base_outputs`` its
    output on the base: the answers the keep-filter (:func:`filter_correct`) holds the model to."""
    bases, sources, labels, ids, base_outputs = [], [], [], [], []
    base_pos: dict[str, list[int]] = {r: [] for r in roles}
    source_pos: dict[str, list[int]] = {r: [] for r in roles}
    dropped: Counter = Counter()
    pad = pad_token_id(tokenizer)
    for example in examples:
        cf = example.counterfactual(kind)
        if not cf.has_answer:
            dropped["counterfactual without an answer"] += 1
            continue
        try:
            label = causal_model.interchange_label(example.variables, cf.variables, variable)
            base_output = causal_model.output(example.variables)
            source_output = causal_model.output(cf.variables)
        except CausalModelError:  # e.g. an official row whose counterfactual has no single answer
            dropped["the causal model cannot label the pair"] += 1
            continue
        absent = [r for r in roles if r not in example.spans or r not in cf.spans]
        if absent:
            dropped[f"no {absent[0]} span in the prompt"] += 1
            continue
        try:
            base = _answered(tokenizer, example.prompt, label)
            source = _answered(tokenizer, cf.prompt, source_output)
            _answer_ids(tokenizer, base_output)  # the filter reads it (own_answers)
            b_roles = role_positions(tokenizer, example.prompt, {r: example.spans[r] for r in roles})
            s_roles = role_positions(tokenizer, cf.prompt, {r: cf.spans[r] for r in roles})
        except TokenizationError:
            dropped["untokenisable (an answer or role the tokenizer cannot encode)"] += 1
            continue
        bases.append(base)
        sources.append(source)
        labels.append(label)
        ids.append(example.id)
        base_outputs.append(base_output)
        for r in roles:
            base_pos[r].append(b_roles[r][-1])
            source_pos[r].append(s_roles[r][-1])
    if not bases:
        raise TokenizationError(f"no {kind!r} pair of {len(examples)} examples could be tokenised ({dict(dropped)})")
    return PairSet(kind, _pad(bases, pad), _pad(sources, pad),
                   {r: torch.tensor(v) for r, v in base_pos.items()},
                   {r: torch.tensor(v) for r, v in source_pos.items()}, ids, labels, dropped, base_outputs)


def filter_correct(pairs: PairSet, runner: ResidualRunner, *, source_answers: Sequences | None = None,
                   base_answers: Sequences | None = None, batch_size: int = 64) -> PairSet:
    """Keep pairs whose base and source the unmodified model answers correctly (MIB's filter).

    ``base_answers`` are the base prompts with the causal model's output on them (:func:`own_answers`; not
    the interchange labels); the source sequences already carry the causal model's output on the source.
    """
    source_ok = answers_correct(runner, source_answers or pairs.source, batch_size)
    base_ok = answers_correct(runner, base_answers, batch_size) if base_answers is not None else torch.ones_like(source_ok)
    keep = source_ok & base_ok
    out = pairs.select(keep.nonzero().flatten())
    out.dropped["model wrong on base"] += int((~base_ok).sum())
    out.dropped["model wrong on source"] += int((base_ok & ~source_ok).sum())
    return out


def own_answers(examples: list[Example], pairs: PairSet, tokenizer) -> Sequences:
    """The base prompts of ``pairs`` followed by the causal model's output on each (for filtering), as
    :func:`build_pairs` recorded it in ``pairs.base_outputs``."""
    if len(pairs.base_outputs) != len(pairs):
        raise ValueError("own_answers needs pairs built by build_pairs (they record the causal model's output "
                         "on each base prompt)")
    by_id = {e.id: e for e in examples}
    pad = pad_token_id(tokenizer)
    return _pad([_answered(tokenizer, by_id[i].prompt, output) for i, output in zip(pairs.example_ids,
                                                                                     pairs.base_outputs)], pad)


@torch.no_grad()
def answers_correct(runner: ResidualRunner, seqs: Sequences, batch_size: int = 64) -> Tensor:
    """[N] bool: the model's argmax predicts every answer token (greedy decoding yields the answer)."""
    out = []
    for start in range(0, len(seqs), batch_size):
        part = seqs.select(torch.arange(start, min(start + batch_size, len(seqs))))
        logits = runner.forward(part.ids, part.mask, read_positions=part.read_positions)
        out.append(predictions_match(logits, part.answer_ids, part.answer_mask))
    return torch.cat(out)


def predictions_match(logits: Tensor, answer_ids: Tensor, answer_mask: Tensor) -> Tensor:
    """[N] bool from logits [N, m, V]: argmax equals the answer at every real answer slot."""
    hit = logits.argmax(-1) == answer_ids.to(logits.device)
    return (hit | ~answer_mask.to(logits.device)).all(-1).cpu()


# ---------------------------------------------------------------------------------------------- helpers
def _answered(tokenizer, prompt: str, answer: str) -> tuple[list[int], int, list[int]]:
    prompt_ids = encode(tokenizer, prompt)
    answer_ids = _answer_ids(tokenizer, answer)
    return prompt_ids + answer_ids[:-1], len(prompt_ids), answer_ids


def _answer_ids(tokenizer, answer: str) -> list[int]:
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if not answer_ids or (unk is not None and unk in answer_ids):
        raise TokenizationError(f"answer {answer!r} is not in the tokenizer's vocabulary")
    return answer_ids


def _pad(items: list[tuple[list[int], int, list[int]]], pad: int) -> Sequences:
    n = len(items)
    ids, mask = right_pad([seq for seq, _, _ in items], pad)
    m = max(len(ans) for _, _, ans in items)
    read = torch.zeros((n, m), dtype=torch.long)
    answers = torch.zeros((n, m), dtype=torch.long)
    answer_mask = torch.zeros((n, m), dtype=torch.bool)
    for row, (_, prompt_len, ans) in enumerate(items):
        for j, token in enumerate(ans):
            read[row, j] = prompt_len - 1 + j
            answers[row, j] = token
            answer_mask[row, j] = True
        read[row, len(ans):] = prompt_len - 1  # padding slots read a real position and are ignored
    return Sequences(ids, mask, read, answers, answer_mask)


def _cat_sequences(parts: list[Sequences]) -> Sequences:
    width = max(p.ids.shape[1] for p in parts)
    m = max(p.answer_ids.shape[1] for p in parts)

    def widen(x: Tensor, size: int, value) -> Tensor:
        return torch.nn.functional.pad(x, (0, size - x.shape[1]), value=value)

    return Sequences(
        torch.cat([widen(p.ids, width, 0) for p in parts]),
        torch.cat([widen(p.mask, width, 0) for p in parts]),
        torch.cat([torch.cat([p.read_positions, p.read_positions[:, :1].expand(-1, m - p.read_positions.shape[1])], 1)
                   for p in parts]),
        torch.cat([widen(p.answer_ids, m, 0) for p in parts]),
        torch.cat([widen(p.answer_mask, m, False) for p in parts]),
    )
