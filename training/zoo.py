"""Train an embedded zoo model on the procedurally generated task suite (seeded, CPU-friendly).

    python -m training.zoo --arch llama --layers 3 --width 192 --heads 6 --kv-heads 2 --batch-size 32 \
        --adaptive --lr 3e-3 --steps 3500 --minutes 30 --split-digits --threads 1 --out /tmp/llama-tasks
    python -m training.zoo --arch llama --tasks ioi induction --minutes 5 --out /tmp/llama-trial

(mibench/zoo/models/README.md gives the exact command, steps and time of every shipped model.) On a
shared 2-core machine use ``--threads 1``: two 2-thread torch jobs on two cores slow each other ~10x.

What the model learns: every task's answer token at the last prompt position (answer-only loss). With
``--contained-prompts``, also the answers of the shorter train-partition prompts of the task that a prompt
begins with, each at its own last token (a causal LM computes them in the same forward anyway): for
induction, every shorter repeat of the same list: 2.7 supervised targets per prompt on average instead of 1,
at no extra forward cost.

Data: training examples are drawn *fresh* at every step from each task's generator, keeping only those whose
split key falls in the ``train`` partition (see :mod:`mibench.data.splits`), so the model never sees a
held-out name pair, operand pair or (object, colour) pair, and cannot memorise a fixed pool either. Each
drawn example also contributes the counterfactual prompts that keep its split key (listed in
:data:`SAME_KEY_COUNTERFACTUALS`, e.g. MCQA's other-letter prompts), so the model answers counterfactual
inputs correctly too. Counterfactuals that change the key (IOI's ``random_names``, arithmetic's and
induction's ``random``) are left out: they could carry a held-out key, and they are ordinary prompts of
the task, whose distribution the clean draws already cover.

Steps: one optimizer step takes a sub-batch of ``--batch-size`` prompts from *every* task (each task's
prompts padded only among themselves) and averages the per-task losses with ``--task-weights``; an optional
sub-batch of an auxiliary copy sentence (``--copy-fraction``) helps small models leave the initial plateau,
and one of repeated lists of words that no induction prompt uses (``--repeat-size``, see :func:`repeat_items`)
rewards copying that ignores token identity.
AdamW with a linear warm-up, then (with ``--steps``) a cosine decay to ``--min-lr`` times the peak.

Evaluation: accuracy (argmax over the whole vocabulary == answer token at the last prompt token) on the
card-sized validation split every ``--eval-every`` steps, and on validation and test at the end.

Reproducibility: everything is seeded (``--seed``); with ``--steps`` (and no early stop from ``--target``)
a run is a fixed sequence of batches and updates, so the same command, torch version and thread count
reproduce the same weights. ``--minutes`` is a safety cap only.

Checkpoints: with ``--checkpoint-dir`` the run writes ``checkpoint.pt`` every ``--checkpoint-every`` steps and
when it stops; ``--resume`` continues it exactly (same weights as an uninterrupted run; see
:mod:`training.checkpoint`), so a run longer than one sitting, or cut by ``--minutes``, is not lost.
``--minutes`` counts the training time of every resumed part together.

Output: an ordinary Hugging Face model folder (config, safetensors, tokenizer) plus ``zoo_card.json``
recording the command line arguments, steps, wall time, parameter count, accuracy per task and split,
and the validation history.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from mibench.data.registry import list_cards, load_task
from mibench.data.padding import right_pad
from mibench.data.splits import partition_of
from mibench.data.tokenization import TokenizationError, answer_token, encode
from mibench.tasks.induction.task import MAX_WORDS, MIN_COPY, MIN_WORDS, render
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.vocab import build_tokenizer, words_of

EVAL_SPLITS = ("validation", "test")
#: Auxiliary sentence: copy the one answer word in context. Moving a word from its position to the last
#: one is part of IOI's, MCQA's and induction's mechanisms; this easy signal shortens the initial plateau.
COPY_TEMPLATE = "Everyone says that {} is nice , so I like"
#: Counterfactual kinds whose prompt keeps the clean example's split key (same names, same (object,
#: colour) pair), so training on them cannot leak a held-out key. Other kinds are not trained on.
SAME_KEY_COUNTERFACTUALS: dict[str, tuple[str, ...]] = {
    "ioi": ("s2_io_flip", "s1_io_flip", "s1_ioi_flip_s2_ioi_flip"),
    "mcqa": ("answerPosition", "randomLetter", "answerPosition_randomLetter"),
}


@dataclass
class TaskData:
    """Token ids of one task's prompts (BOS first, unpadded) and their answer ids.

    ``extra`` holds, per prompt, further ``(position, answer id)`` targets inside it: the last tokens of the
    shorter task prompts it begins with (``--contained-prompts``); empty lists when there are none.
    """

    prompts: list[list[int]]
    answers: list[int]
    extra: list[list[tuple[int, int]]] = field(default_factory=list)


def procedural_task_ids() -> list[str]:
    """Tasks that have a generator (official-only tasks such as ARC cannot be trained on offline)."""
    return [card.id for card in list_cards() if load_task(card.id).procedural]


def model_config(arch: str, vocab_size: int, *, layers: int, width: int, heads: int, kv_heads: int,
                 max_positions: int, activation: str = "gelu_new"):
    """A Hugging Face config of the zoo's shape. ``activation`` is GPT-2's MLP nonlinearity: ``gelu_new``
    (GPT-2's own) and ``gelu_pytorch_tanh`` are the same tanh-GELU formula; HF evaluates the second as one
    fused kernel, which makes a training step ~9 % faster. Attention is eager (~4 % faster than SDPA on
    these tiny shapes in training; the choice is not saved in ``config.json``)."""
    if arch == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, n_layer=layers, n_embd=width, n_head=heads,
                            n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                            activation_function=activation, bos_token_id=2, eos_token_id=2, pad_token_id=1)
    elif arch == "llama":
        config = LlamaConfig(vocab_size=vocab_size, num_hidden_layers=layers, hidden_size=width,
                             num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=width // heads,
                             intermediate_size=4 * width, max_position_embeddings=max_positions,
                             bos_token_id=2, eos_token_id=2, pad_token_id=1, tie_word_embeddings=True)
    else:
        raise ValueError(f"unknown architecture {arch!r} (gpt2 or llama)")
    config._attn_implementation = "eager"
    return config


def task_data(tokenizer, examples, *, with_counterfactuals: bool) -> TaskData:
    prompts, answers = [], []
    for example in examples:
        items = [(example.prompt, example.answer)]
        if with_counterfactuals:
            items += [(cf.prompt, cf.answer) for cf in example.counterfactuals.values() if cf.has_answer]
        for prompt, answer in items:
            prompts.append(encode(tokenizer, prompt))
            answers.append(answer_token(tokenizer, answer, example.id))
    return TaskData(prompts, answers)


#: One training prompt: its text, its answer, and the (prompt, answer) of the shorter prompts it begins with.
Item = tuple[str, str, list[tuple[str, str]]]


class ItemSource:
    """An endless stream of items whose position can be saved and restored exactly (for checkpoints).

    Items come in groups drawn with one RNG (a drawn example and its counterfactuals); all of a group's
    randomness is used before its first item is handed out, so the stream's position is fully described by
    the RNG's state and the group's remaining items, both plain Python data (:meth:`state`).
    """

    def __init__(self, draw_group: Callable[[random.Random], list[Item]], rng: random.Random) -> None:
        self.draw_group, self.rng = draw_group, rng
        self.pending: list[Item] = []

    def __iter__(self) -> ItemSource:
        return self

    def __next__(self) -> Item:
        while not self.pending:
            self.pending = list(self.draw_group(self.rng))
        return self.pending.pop(0)

    def state(self) -> dict:
        return {"rng": self.rng.getstate(), "pending": list(self.pending)}

    def load_state(self, state: dict) -> None:
        self.rng.setstate(_as_rng_state(state["rng"]))
        self.pending = [_as_item(item) for item in state["pending"]]


def _as_rng_state(state) -> tuple:
    """``random.Random.getstate()`` again after a round trip through a checkpoint (tuples may come back
    as lists)."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def _as_item(item) -> Item:
    prompt, answer, contained = item
    return prompt, answer, [(p, a) for p, a in contained]


def train_items(task, rng: random.Random, cf_prob: float = 1.0, contained: bool = False) -> ItemSource:
    """An endless stream of (prompt, answer, contained prompts) from the task's train partition (every
    partition of :attr:`~mibench.data.task.Task.model_training_splits`: RAVEL's cities must all be known);
    each same-key counterfactual of a drawn example follows it with probability ``cf_prob``.

    With ``contained``, each clean prompt also carries the shorter prompts of the task that it begins with
    (:meth:`~mibench.data.task.Task.contained_prompts`) whose split key is in the train partition, so they
    are supervised in the same forward; held-out keys among them are dropped like any other.
    """
    kinds = SAME_KEY_COUNTERFACTUALS.get(task.card.id, ())
    splits = task.model_training_splits

    def group(rng: random.Random) -> list[Item]:
        example = next(partition_examples(task, rng, *splits))
        inner = [(prompt, answer) for key, prompt, answer in task.contained_prompts(example)
                 if partition_of(task.card.id, key) in splits] if contained else []
        items: list[Item] = [(example.prompt, example.answer, inner)]
        for kind in kinds:
            cf = example.counterfactuals.get(kind)
            if cf is not None and cf.has_answer and rng.random() < cf_prob:
                items.append((cf.prompt, cf.answer, []))
        return items

    return ItemSource(group, rng)


def partition_examples(task, rng: random.Random, *splits: str) -> Iterator:
    """An endless stream of freshly drawn examples whose split key falls in one of ``splits``."""
    while True:
        key, example = task.draw(rng)
        if partition_of(task.card.id, key) in splits:
            yield example


def copy_items(words: list[str], rng: random.Random) -> ItemSource:
    def group(rng: random.Random) -> list[Item]:
        word = rng.choice(words)
        return [(COPY_TEMPLATE.format(word), " " + word, [])]

    return ItemSource(group, rng)


def repeat_items(words: list[str], rng: random.Random) -> ItemSource:
    """Auxiliary induction data over *other* words: 6-10 distinct words then a repeat of the first m
    (2 <= m < n), answered by word m, with every shorter repeat as a contained prompt.

    Why: the induction task's split keys are (query, answer) noun pairs, so a model trained on it alone can
    partly memorise which noun follows which (train accuracy 0.998 against 0.94 on held-out pairs). Lists of
    words that no induction prompt uses reward only a token-independent copy mechanism and hold no noun pair.
    """
    def group(rng: random.Random) -> list[Item]:
        n = rng.randint(MIN_WORDS, MAX_WORDS)
        chosen = rng.sample(words, n)
        copy_len = rng.randint(MIN_COPY, n - 1)
        prefixes = [(render(chosen, j)[0], " " + chosen[j]) for j in range(MIN_COPY, copy_len + 1)]
        return [(prefixes[-1][0], prefixes[-1][1], prefixes[:-1])]

    return ItemSource(group, rng)


class Stream:
    """Draws tokenized sub-batches from an item stream, shuffling a small buffer so a clean prompt and its
    counterfactuals do not always land in the same sub-batch."""

    def __init__(self, items: ItemSource, tokenizer, rng: random.Random, buffer: int = 512):
        self.items, self.tokenizer, self.rng = items, tokenizer, rng
        self.buffer: list[Item] = [next(items) for _ in range(buffer)]
        self.cache: dict[str, int] = {}
        self.skipped = 0

    def take(self, n: int) -> TaskData:
        chosen = []
        for _ in range(n):
            i = self.rng.randrange(len(self.buffer))
            chosen.append(self.buffer[i])
            self.buffer[i] = next(self.items)
        bos, unk = self.tokenizer.bos_token_id, self.tokenizer.unk_token_id
        ids = self.tokenizer([p for p, _, _ in chosen], add_special_tokens=False)["input_ids"]
        inner = [p for _, _, contained in chosen for p, _ in contained]
        inner_ids = iter(self.tokenizer(inner, add_special_tokens=False)["input_ids"] if inner else [])
        prompts, answers, extra = [], [], []
        for row, (prompt, answer, contained) in zip(ids, chosen):
            targets = []
            for inner_prompt, inner_answer in contained:
                prefix = next(inner_ids)
                if row[: len(prefix)] != prefix:
                    raise ValueError(f"contained prompt {inner_prompt!r} does not tokenize as a prefix of {prompt!r}")
                targets.append((len(prefix), self.answer_id(inner_answer, inner_prompt)))  # BOS shifts by one
            answer_id = self.answer_id(answer, prompt)
            if answer_id == unk or unk in row or any(t == unk for _, t in targets):
                self.skipped += 1  # a word outside the vocabulary (collected from the card-sized splits)
                continue
            prompts.append([bos] + list(row))
            answers.append(answer_id)
            extra.append(targets)
        return TaskData(prompts, answers, extra)

    def state(self) -> dict:
        """The stream's position: its items' position, its shuffle RNG, the buffer and the skip count."""
        return {"items": self.items.state(), "rng": self.rng.getstate(), "buffer": list(self.buffer),
                "skipped": self.skipped}

    def load_state(self, state: dict) -> None:
        self.items.load_state(state["items"])
        self.rng.setstate(_as_rng_state(state["rng"]))
        self.buffer = [_as_item(item) for item in state["buffer"]]
        self.skipped = int(state["skipped"])

    def answer_id(self, answer: str, prompt: str) -> int:
        """The answer's single token id (``[UNK]`` for a word outside the vocabulary), cached."""
        if answer not in self.cache:
            try:
                self.cache[answer] = answer_token(self.tokenizer, answer, prompt)
            except TokenizationError:
                self.cache[answer] = self.tokenizer.unk_token_id
        return self.cache[answer]


def batch_tensors(data: TaskData, indices: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask and last-real-token positions for the chosen rows."""
    return pad_rows([data.prompts[i] for i in indices], pad_id)


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask (the library's one padding, :func:`right_pad`) and the
    last-real-token positions of token rows."""
    ids, mask = right_pad(rows, pad_id)
    return ids, mask, mask.sum(-1) - 1


def supervised_logits(model, data: TaskData, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and target ids at every supervised position: each prompt's last real token, then the extra
    targets inside prompts (the unembedding is applied at those positions only, which is cheaper)."""
    ids, mask, last = batch_tensors(data, list(range(len(data.answers))), pad_id)
    hidden = model.base_model(ids, attention_mask=mask).last_hidden_state
    rows, positions, targets = list(range(len(data.answers))), last.tolist(), list(data.answers)
    for row, extra in enumerate(data.extra):
        for position, target in extra:
            rows.append(row)
            positions.append(position)
            targets.append(target)
    return model.get_output_embeddings()(hidden[rows, positions]), torch.tensor(targets)


@torch.no_grad()
def accuracy(model, data: TaskData, pad_id: int, batch_size: int = 256) -> float:
    """Fraction of prompts whose argmax over the whole vocabulary is the answer token."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(data.answers), batch_size):
        indices = list(range(start, min(start + batch_size, len(data.answers))))
        ids, mask, last = batch_tensors(data, indices, pad_id)
        logits = model(ids, attention_mask=mask).logits[torch.arange(len(indices)), last]
        correct += int((logits.argmax(-1) == torch.tensor([data.answers[i] for i in indices])).sum())
    model.train(was_training)
    return correct / max(1, len(data.answers))


def sinusoidal_positions(n_positions: int, width: int, std: float = 0.02) -> torch.Tensor:
    """Sinusoidal position vectors (sin/cos pairs at geometric frequencies), scaled to GPT-2's init std.

    Used as the *initial* value of GPT-2's learned position embeddings: moving from position p to p+k is
    then one fixed linear map, so "attend k tokens back" (previous-token and induction heads) is easy to
    learn early; the embeddings stay trainable.
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(-math.log(10_000.0) * torch.arange(0, width, 2, dtype=torch.float32) / width)
    table = torch.zeros(n_positions, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : width // 2]
    return table * std * math.sqrt(2.0)  # sin/cos have RMS 1/sqrt(2)


def learning_rate(args: argparse.Namespace, step: int) -> float:
    """Linear warm-up, then constant, or with ``--steps`` a cosine decay to ``min_lr * lr``."""
    if step <= args.warmup:
        return args.lr * step / args.warmup
    if not args.steps:
        return args.lr
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (args.min_lr + (1 - args.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))


def adaptive_sizes(val: dict[str, float], batch_size: int, min_batch: int) -> dict[str, int]:
    """Per-task sub-batch sizes for ``--adaptive``: the step's ``batch_size * n_tasks`` prompts are shared in
    proportion to each task's validation error, with at least ``min_batch`` each so solved tasks stay solved."""
    total = batch_size * len(val)
    errors = {t: max(1e-3, 1.0 - a) for t, a in val.items()}
    spare = total - min_batch * len(val)
    return {t: min_batch + round(spare * e / sum(errors.values())) for t, e in errors.items()}


def repeat_stream_of(args: argparse.Namespace, splits: dict, words: set[str], tokenizer) -> Stream:
    """The ``--repeat-size`` stream: :func:`repeat_items` over the vocabulary's words that no induction
    prompt uses."""
    induction_words = set().union(*map(words_of, splits["induction"].values())) if "induction" in splits else set()
    repeat_words = sorted(w for w in words if w.isalpha() and w not in induction_words)
    if len(repeat_words) < MAX_WORDS:
        raise ValueError(f"--repeat-size needs at least {MAX_WORDS} vocabulary words outside the induction task; "
                         f"the tasks {sorted(splits)} give {len(repeat_words)} (train another task as well)")
    return Stream(repeat_items(repeat_words, random.Random(f"{args.seed}:repeat")), tokenizer,
                  random.Random(f"{args.seed}:repeat:buffer"))


def checkpoint_args(args: argparse.Namespace) -> dict:
    """The arguments a checkpoint records (and a resumed run must match), as plain data."""
    return {k: v for k, v in vars(args).items() if k != "argv"}


def parse_weights(pairs: list[str] | None, task_ids: list[str]) -> dict[str, float]:
    weights = {t: 1.0 for t in task_ids}
    for pair in pairs or ():
        task, _, value = pair.partition("=")
        if task not in weights:
            raise ValueError(f"--task-weights names {task!r}, which is not trained (tasks: {task_ids})")
        weights[task] = float(value)
    return weights


def train(args: argparse.Namespace) -> dict:
    setup_started = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    task_ids = args.tasks or procedural_task_ids()
    tasks = {t: load_task(t) for t in task_ids}
    weights = parse_weights(args.task_weights, task_ids)
    splits = {t: {s: task.examples(s, args.examples if s == "train" else None) for s in ("train", *EVAL_SPLITS)}
              for t, task in tasks.items()}
    words = set().union(*(words_of(examples, split_digits=args.split_digits)
                          for per in splits.values() for examples in per.values()))
    words |= set(COPY_TEMPLATE.format("").split())
    tokenizer = build_tokenizer(words, split_digits=args.split_digits)
    pad_id = tokenizer.pad_token_id
    eval_data = {t: {s: task_data(tokenizer, splits[t][s], with_counterfactuals=False) for s in EVAL_SPLITS}
                 for t in splits}
    streams = {t: Stream(train_items(tasks[t], random.Random(f"{args.seed}:{t}"), args.cf_prob,
                                     args.contained_prompts), tokenizer,
                         random.Random(f"{args.seed}:{t}:buffer")) for t in task_ids}
    answer_words = sorted({ex.answer.strip() for per in splits.values() for ex in per["train"]})
    copy_stream = Stream(copy_items(answer_words, random.Random(f"{args.seed}:copy")), tokenizer,
                         random.Random(f"{args.seed}:copy:buffer"))
    repeat_stream = repeat_stream_of(args, splits, words, tokenizer) if args.repeat_size else None
    longest = max(len(p) for per in eval_data.values() for d in per.values() for p in d.prompts)

    config = model_config(args.arch, len(tokenizer), layers=args.layers, width=args.width, heads=args.heads,
                          kv_heads=args.kv_heads, max_positions=max(64, 2 * longest), activation=args.activation)
    model = AutoModelForCausalLM.from_config(config)
    if args.sinusoidal_positions:
        if args.arch != "gpt2":
            raise ValueError("--sinusoidal-positions applies to GPT-2's learned position embeddings only")
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(sinusoidal_positions(*model.transformer.wpe.weight.shape))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                  betas=(0.9, 0.98))
    sizes = {t: args.batch_size for t in task_ids}
    copy_size = round(args.copy_fraction * args.batch_size)
    named_streams = {**{f"task:{t}": streams[t] for t in task_ids}, "copy": copy_stream,
                     **({"repeat": repeat_stream} if repeat_stream is not None else {})}
    history: list[dict] = []
    step = 0
    earlier_seconds = 0.0  # training seconds of the runs this one resumes
    resumed_at: list[int] = []
    if args.resume:
        state = load_checkpoint(args.checkpoint_dir, checkpoint_args(args))
        if state["vocab"] != tokenizer.get_vocab():
            raise CheckpointError(f"--resume: the checkpoint in {args.checkpoint_dir} was trained with another "
                                  "vocabulary (the tasks' generators changed since)")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        for name, stream in named_streams.items():
            stream.load_state(state["streams"][name])
        step, sizes, history = int(state["step"]), dict(state["sizes"]), list(state["history"])
        earlier_seconds, resumed_at = float(state["train_seconds"]), [*state["resumed_at"], int(state["step"])]
        print(f"resumed from {args.checkpoint_dir} at step {step} ({earlier_seconds:.1f}s trained)", flush=True)

    def save(elapsed: float) -> None:
        """Checkpoint the run as it stands after ``step`` (see :mod:`training.checkpoint`)."""
        save_checkpoint(args.checkpoint_dir, {
            "args": checkpoint_args(args), "vocab": tokenizer.get_vocab(), "step": step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
            "streams": {name: stream.state() for name, stream in named_streams.items()}, "sizes": dict(sizes),
            "history": history, "train_seconds": elapsed, "resumed_at": resumed_at})

    started = time.perf_counter() - earlier_seconds  # elapsed counts the resumed runs' training time too
    setup_seconds = time.perf_counter() - setup_started
    stop_reason = "steps"
    model.train()
    while True:
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args, step)
        losses = {}
        total_weight = sum(weights[t] * sizes[t] for t in task_ids)  # the step's loss is a weighted mean per prompt
        optimizer.zero_grad(set_to_none=True)
        for t in task_ids:
            data = streams[t].take(sizes[t])
            if not data.answers:
                continue
            loss = torch.nn.functional.cross_entropy(*supervised_logits(model, data, pad_id))
            (loss * weights[t] * sizes[t] / total_weight).backward()
            losses[t] = loss.item()
        if copy_size:
            data = copy_stream.take(copy_size)
            loss = torch.nn.functional.cross_entropy(*supervised_logits(model, data, pad_id))
            (loss * args.copy_weight).backward()
        if repeat_stream is not None:
            data = repeat_stream.take(args.repeat_size)
            loss = torch.nn.functional.cross_entropy(*supervised_logits(model, data, pad_id))
            (loss * args.repeat_size / total_weight).backward()  # weighted per prompt like a task's sub-batch
            losses["repeat"] = loss.item()
        if args.clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        elapsed = time.perf_counter() - started
        out_of_time = elapsed > args.minutes * 60
        last_step = (bool(args.steps) and step >= args.steps) or (bool(args.max_steps) and step >= args.max_steps)
        eval_step = step % args.eval_every == 0
        if args.checkpoint_dir and (out_of_time or last_step) and not eval_step:
            save(elapsed)  # before the evaluation that only stopping causes, so a resumed run never sees it
        if eval_step or out_of_time or last_step:
            val = {t: accuracy(model, eval_data[t]["validation"], pad_id) for t in task_ids}
            history.append({"step": step, "seconds": round(elapsed, 1), "lr": learning_rate(args, step),
                            "batch": dict(sizes),
                            "loss": {t: round(v, 4) for t, v in losses.items()},
                            "validation": val})
            print(f"step {step:6d} {elapsed:7.1f}s lr {learning_rate(args, step):.1e} | "
                  + " ".join(f"{t.removeprefix('arithmetic_')[:8]} {losses.get(t, math.nan):.3f}/{a:.3f}"
                             for t, a in val.items()), flush=True)
            if args.adaptive:
                sizes = adaptive_sizes(val, args.batch_size, args.min_batch)
            reached = min(val.values()) >= args.target
            if args.checkpoint_dir and eval_step and (step % args.checkpoint_every == 0 or out_of_time or last_step
                                                      or reached):
                save(elapsed)
            if reached:
                stop_reason = "target"
            elif out_of_time:
                stop_reason = "minutes"
            elif not last_step:
                continue
            break
        if args.checkpoint_dir and step % args.checkpoint_every == 0:
            save(elapsed)
    seconds = time.perf_counter() - started
    result = {
        "arch": args.arch,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "argv")},
        "command": "python -m training.zoo " + " ".join(args.argv),
        "tasks": {t: str(tasks[t].card.version) for t in task_ids},
        "steps": step,
        "stopped_by": stop_reason,
        "resumed_at_steps": resumed_at,
        "skipped_unknown_words": {t: streams[t].skipped for t in task_ids},
        "train_seconds": round(seconds, 1),
        "setup_seconds": round(setup_seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {"layers": args.layers, "width": args.width, "heads": args.heads,
                   "kv_heads": args.kv_heads if args.arch == "llama" else args.heads,
                   "vocab_size": len(tokenizer), "split_digits": args.split_digits},
        "accuracy": {t: {s: accuracy(model, eval_data[t][s], pad_id) for s in EVAL_SPLITS} for t in task_ids},
        "eval_sizes": {t: {s: len(eval_data[t][s].answers) for s in EVAL_SPLITS} for t in task_ids},
        "history": history,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} threads",
    }
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "zoo_card.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("gpt2", "llama"), default="gpt2")
    parser.add_argument("--tasks", nargs="*", help="task ids (default: every task with a generator)")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--kv-heads", type=int, default=2, help="K/V heads (llama only; < heads gives GQA)")
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per task per step")
    parser.add_argument("--adaptive", action="store_true",
                        help="after each evaluation, share each step's prompts among tasks by validation error")
    parser.add_argument("--min-batch", type=int, default=8, help="smallest per-task sub-batch with --adaptive")
    parser.add_argument("--task-weights", nargs="*", metavar="TASK=W", help="loss weight per task (default 1)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=0.1, help="final lr as a fraction of --lr (with --steps)")
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0 turns it off)")
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps (0: run until --minutes or --target)")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="stop after this many steps even if the --steps schedule is not finished (0: no limit); "
                             "reproduces a run that --minutes cut short")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--target", type=float, default=1.01,
                        help="stop early when every task's validation accuracy reaches it (default: never)")
    parser.add_argument("--minutes", type=float, default=30.0, help="time cap")
    parser.add_argument("--copy-fraction", type=float, default=0.0,
                        help="copy-sentence prompts per step, as a fraction of --batch-size (0 turns it off)")
    parser.add_argument("--copy-weight", type=float, default=0.1, help="loss weight of the copy sub-batch")
    parser.add_argument("--activation", choices=("gelu_new", "gelu_pytorch_tanh"), default="gelu_new",
                        help="GPT-2's MLP activation: the same tanh-GELU; gelu_pytorch_tanh runs fused (faster)")
    parser.add_argument("--repeat-size", type=int, default=0,
                        help="prompts per step of auxiliary repeated lists of words no induction prompt uses "
                             "(token-independent induction; 0 turns it off)")
    parser.add_argument("--sinusoidal-positions", action="store_true",
                        help="GPT-2: initialise the learned position embeddings with scaled sinusoids")
    parser.add_argument("--cf-prob", type=float, default=1.0,
                        help="probability that each same-key counterfactual of a drawn example is trained on")
    parser.add_argument("--contained-prompts", action="store_true",
                        help="also supervise the shorter train-partition task prompts each prompt begins with, "
                             "at their own last tokens in the same forward (induction's shorter repeats)")
    parser.add_argument("--split-digits", action="store_true",
                        help="tokenize numbers inside prompts digit by digit (answers stay one token)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--examples", type=int,
                        help="train-split examples generated to collect the vocabulary (default: the card's size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder to write the trained model to")
    parser.add_argument("--checkpoint-dir",
                        help="folder for checkpoint.pt, written every --checkpoint-every steps and when the run stops")
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run checkpointed in --checkpoint-dir exactly where it stopped (the other "
                             "arguments must match, except --minutes, --max-steps, --threads and --out)")
    args = parser.parse_args(argv)
    if args.resume and not args.checkpoint_dir:
        parser.error("--resume needs --checkpoint-dir")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    result = train(parse_args(argv))
    print(json.dumps({k: result[k] for k in ("steps", "train_seconds", "parameters", "accuracy")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
