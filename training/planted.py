"""Planted-circuit models: small transformers trained so that a chosen circuit *is* the mechanism.

Training follows strict interchange intervention training (SIIT; Gupta et al. 2024, InterpBench) with the
patching engine doing every intervention, so the circuit is defined in MIB's own graph:

* **behaviour**: cross-entropy of the task's answer on clean prompts;
* **interchange (IIT)**: for a high-level variable mapped to a node (a head or an MLP), that node's output (all
  positions) is taken from a counterfactual run; the target is the causal model's output after interchanging
  the variable;
* **strictness**: edges *outside* the ground-truth circuit are ablated with the counterfactual run's
  activations (MIB's patching) -- all of them in a share of the steps, a random subset otherwise -- and the
  model must still give the base answer (optionally its logit difference). So nothing outside the circuit can
  carry the task, while norm and spread floors keep the non-circuit heads and MLPs at ordinary, varying
  activations (nothing is zeroed or pruned: a circuit planted by deleting weights would be trivially
  detectable).

An optional first stage (``--circuit-steps``) trains the circuit by itself, everything else zero-ablated (with
attention hints where a design needs them), so that SIIT starts from a circuit that already solves the task and
only has to make the rest of the model harmless and ordinary-looking.

The ground truth is the list of edges of :class:`PlantedDesign`; the trained model ships it as
``ground_truth/<task>.json`` (MIB's circuit JSON) beside its weights, which ``mibench evaluate`` picks up to
report AUROC. ``python -m training.planted --design planted-addition --out <folder>`` trains one (seeded).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from safetensors.torch import load_file
from tabulate import tabulate
from transformers import AutoModelForCausalLM

from mibench.causal.causal_model import OUTPUT
from mibench.circuits.batches import build_batches
from mibench.circuits.ground_truth import GROUND_TRUTH_DIR, ground_truth_counterfactual, ground_truth_path, model_card
from mibench.circuits.metrics import logit_difference
from mibench.data.registry import load_task
from mibench.data.tokenization import answer_token, encode, role_positions
from mibench.engine import PatchingEngine
from mibench.engine.ablation import Ablation
from mibench.engine.masks import CircuitMask
from mibench.errors import MibenchError
from mibench.graph.graph import Graph
from mibench.graph.io import load_circuit, save_json
from mibench.models.adapter import adapter_for
from mibench.models.loading import load_model, tokenizer_from
from mibench.zoo.catalog import CARD_FILE, model_path
from training.zoo import model_config, pad_rows, partition_examples

#: Counterfactual kinds of IOI whose prompts share the clean prompt's template (so positions line up).
IOI_KINDS = ("s1_io_flip", "s2_io_flip", "s1_ioi_flip_s2_ioi_flip", "random_names")


@dataclass(frozen=True)
class Interchange:
    """A high-level variable realised by one node (a head or an MLP), and the counterfactual kinds it trains on."""

    variable: str  # the causal model's variable (its interchange gives the label)
    node: str  # MIB node name: "a{layer}.h{head}" or "m{layer}"
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class AttentionHint:
    """A curriculum aid for the circuit-first stage: ``head``, at the last token of role ``query`` (shifted by
    ``query_offset`` tokens), should attend to the last token of role ``key`` (shifted by ``key_offset``).

    Some designs compose heads whose attention must all be right before any one of them helps the answer (MCQA:
    the stated colour moved to the final token and each letter onto its option's colour, before the lookup can
    find anything), a saddle that training on the answer alone did not leave in thousands of steps. The hint is a
    cross-entropy on the head's attention pattern, used only while the circuit is trained alone; the SIIT stage
    and the proofs never see it.
    """

    head: str  # "a{layer}.h{head}"
    query: str  # a token role of the task's examples
    key: str
    query_offset: int = 0
    key_offset: int = 0


@dataclass(frozen=True)
class PlantedDesign:
    """What a planted model must implement, in MIB's graph.

    ``circuit_edges`` is the ground truth: the edges through which information that *differs* between a prompt and
    its counterfactual flows. Edges the mechanism also uses but whose sender is the same in every prompt and
    counterfactual the model sees (the query a head at the final token reads from the unchanged final token, a
    head's key when its attention is positional) are not listed: patching them with counterfactual activations
    changes nothing, so no patching-based method can, or should, find them. The strictness term ablates them like
    any non-circuit edge, which also forces such heads to attend by position rather than by content.
    """

    name: str
    task: str
    layers: int
    heads: int
    width: int
    circuit_edges: tuple[str, ...]  # MIB edge names
    interchanges: tuple[Interchange, ...]
    strict_kinds: tuple[str, ...]
    #: The counterfactual under which every ground-truth edge carries information (AUROC is scored with it).
    counterfactual: str
    description: str = ""
    #: Edges the mechanism uses whose sender is the same in every prompt and counterfactual. Documentation only:
    #: they are not in the ground truth, and training ablates them like any other edge outside it (which is
    #: what keeps them constant-carrying, e.g. a positional head's keys).
    constant_edges: tuple[str, ...] = field(default=())
    #: Attention targets for the circuit-first stage (see :class:`AttentionHint`).
    attention_hints: tuple[AttentionHint, ...] = field(default=())

    @property
    def circuit_nodes(self) -> tuple[str, ...]:
        nodes = {"input", "logits"}
        for edge in self.circuit_edges:
            sender, receiver = edge.split("->")
            nodes.update({sender, receiver.split("<")[0]})
        return tuple(sorted(nodes))


IOI_DESIGN = PlantedDesign(
    name="planted-ioi",
    task="ioi",
    layers=2,
    heads=4,
    width=128,
    circuit_edges=(
        "input->a0.h0<v>",  # subject mover: END attends to the last name (S2) and reads who it is
        "a0.h0->a1.h0<q>",  # name mover at END: its query carries the subject ...
        "input->a1.h0<k>",  # ... its keys the names' identities, so it can avoid the subject ...
        "input->a1.h0<v>",  # ... and it copies the other name
        "a1.h0->logits",
    ),
    # a0.h0 finds the last name by token type and position, which every IOI counterfactual keeps (names are
    # replaced by names); the final token ("to") feeding both END queries is the same in every prompt.
    constant_edges=("input->a0.h0<q>", "input->a0.h0<k>", "input->a1.h0<q>"),
    interchanges=(
        Interchange("giver", "a0.h0", ("s1_io_flip", "s2_io_flip", "s1_ioi_flip_s2_ioi_flip")),
        Interchange("output_token", "a1.h0", IOI_KINDS),
    ),
    strict_kinds=IOI_KINDS,
    counterfactual="random_names",
    description="IOI by subject inhibition in two heads: a0.h0 at the final token attends to the last name "
                "mentioned (the subject's second mention) and reads its identity (IIT variable giver); a1.h0, "
                "the name mover, queries with that identity, attends to the name that is not the subject and "
                "copies it to the logits (IIT variable output_token). Every other head and every MLP is outside "
                "the circuit.",
)

ADDITION_DESIGN = PlantedDesign(
    name="planted-addition",
    task="arithmetic_addition",
    layers=2,
    heads=4,
    width=128,
    circuit_edges=(
        "input->a0.h0<v>",  # ones head: END reads the two ones digits (positional attention)
        "input->a0.h1<v>",  # tens head: END reads the two tens digits
        "a0.h0->m0",  # carry MLP: the ones digits -> ones_carry
        "a0.h0->m1", "a0.h1->m1", "m0->m1",  # result MLP: ones digit, tens digits and the carry -> the sum
        "m1->logits",
    ),
    interchanges=(
        Interchange("op1_ones+op2_ones", "a0.h0", ("random", "ones_carry")),
        Interchange("op1_tens+op2_tens", "a0.h1", ("random",)),
        Interchange("ones_carry", "m0", ("ones_carry", "random")),
    ),
    strict_kinds=("random", "ones_carry"),
    counterfactual="random",
    description="Column-wise addition: a0.h0 moves the two ones digits and a0.h1 the two tens digits to the final "
                "token (IIT variables op1_ones+op2_ones and op1_tens+op2_tens); m0 computes the ones carry from the ones digits (IIT variable ones_carry); m1 combines ones "
                "digits, tens digits and carry into the sum. Both heads attend by position, so their keys and "
                "queries carry nothing that differs between problems.",
)

MCQA_DESIGN = PlantedDesign(
    name="planted-mcqa",
    task="mcqa",
    layers=2,
    heads=4,
    width=128,
    circuit_edges=(
        "input->a0.h0<v>",  # letter mover: each option's colour token reads its letter (two tokens back)
        "input->a1.h0<k>",  # answer mover at END: keys are the options' colours ...
        "a0.h0->a1.h0<v>",  # ... values the letters moved onto them
        "a1.h0->logits",
    ),
    # a0.h1 copies the stated colour to the final token, where it is the answer mover's query. The question never
    # changes between an MCQA prompt and its counterfactuals, so that path is constant under patching. Both
    # layer-0 heads attend by position (an option's colour to its letter, the final token to the stated colour),
    # and a1.h0's query reads the final token, which every prompt shares.
    constant_edges=("input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h1<q>", "input->a0.h1<k>",
                    "input->a0.h1<v>", "a0.h1->a1.h0<q>", "input->a1.h0<q>"),
    interchanges=(
        Interchange("symbols", "a0.h0", ("randomLetter", "answerPosition_randomLetter")),
        Interchange("answer", "a1.h0", ("answerPosition", "randomLetter", "answerPosition_randomLetter")),
    ),
    # the stated colour to the final token; the correct option's colour to its letter (two tokens back: a0.h0 is
    # positional, so one option per prompt, a different one each time, teaches all four)
    attention_hints=(AttentionHint("a0.h1", "END", "color"),
                     AttentionHint("a0.h0", "correct_symbol_period", "correct_symbol", query_offset=1)),
    strict_kinds=("answerPosition", "randomLetter", "answerPosition_randomLetter"),
    counterfactual="answerPosition_randomLetter",
    description="Multiple choice by lookup: a0.h0 copies each option's letter onto its colour token (IIT variable "
                "symbols) and a0.h1 copies the stated colour to the final token; there a1.h0 queries with that "
                "colour, attends to the option holding it, and outputs the letter found there (IIT variable "
                "answer). The answer pointer lives in a1.h0's attention pattern, not in any one node's output.",
)

DESIGNS = {design.name: design for design in (IOI_DESIGN, ADDITION_DESIGN, MCQA_DESIGN)}


def node_group(engine, node: str) -> tuple[int, int]:
    """(source-group index, index inside the group) of a head or MLP node, from the engine's own groups."""
    names = engine.layout.forward_names
    if node not in names[1:]:
        raise MibenchError(f"{node!r} is not a head (a<layer>.h<head>) or an MLP (m<layer>) of this model")
    index = names.index(node)
    return next((i, index - g.start) for i, g in enumerate(engine.groups) if g.start <= index < g.stop)


# ============================================================================================ high level
def subject_label(base: dict, source: dict) -> str:
    """IOI with the subject (the giver) fixed to the source's: the base's name that is not the source's giver."""
    others = [n for n in base["names"] if n != source["giver"]]
    if len(others) != 1:
        raise MibenchError(f"the source's giver {source['giver']!r} must be one of the base's names {base['names']}")
    return " " + others[0]


def interchange_label(task, variable: str, base: dict, source: dict) -> str:
    """The high-level model's answer on ``base`` with ``variable`` taken from ``source``.

    ``variable`` is a target of the task's causal model, IOI's ``giver``, or input variables joined by ``+``
    (``op1_ones+op2_ones``: a head that moves those inputs; the label is the answer to the base prompt with those
    inputs replaced by the source's).
    """
    if variable == "giver":
        return subject_label(base, source)
    model = task.causal_model()
    names = variable.split("+")
    if all(name in model.inputs for name in names):
        return model.run_forward(base, {name: source[name] for name in names})[OUTPUT]
    return model.interchange_label(base, source, variable)


# ============================================================================================== training
@dataclass
class Batch:
    clean: torch.Tensor
    mask: torch.Tensor
    last: torch.Tensor
    answers: torch.Tensor
    cf: dict[str, torch.Tensor]  # kind -> counterfactual ids (same lengths as clean)
    cf_answers: dict[str, torch.Tensor]
    examples: list


def _batch(examples, kinds, tokenizer) -> Batch:
    pad = tokenizer.pad_token_id
    clean, mask, last = pad_rows([encode(tokenizer, e.prompt) for e in examples], pad)
    cf = {k: pad_rows([encode(tokenizer, e.counterfactual(k).prompt) for e in examples], pad)[0] for k in kinds}
    answers = torch.tensor([answer_token(tokenizer, e.answer, e.id) for e in examples])
    cf_answers = {k: torch.tensor([answer_token(tokenizer, e.counterfactual(k).answer, e.id) for e in examples])
                  for k in kinds}
    return Batch(clean, mask, last, answers, cf, cf_answers, list(examples))


def _draw(task, rng: random.Random, n: int) -> list:
    """``n`` fresh train-partition examples (the zoo trainer's stream: held-out keys are never drawn)."""
    return list(islice(partition_examples(task, rng, "train"), n))


class Trainer:
    """The model being planted, its engine, and the three SIIT losses."""

    def __init__(self, design: PlantedDesign, tokenizer, seed: int) -> None:
        self.design, self.tokenizer = design, tokenizer
        torch.manual_seed(seed)
        self.rng = random.Random(seed)
        self.task = load_task(design.task)
        config = model_config("gpt2", len(tokenizer), layers=design.layers, width=design.width, heads=design.heads,
                              kv_heads=design.heads, max_positions=64)
        self.model = AutoModelForCausalLM.from_config(config)
        self.engine = PatchingEngine(adapter_for(self.model))
        self.layout = self.engine.layout
        self.graph = Graph(self.layout)
        self.circuit = self._edge_mask(design.circuit_edges)
        #: What the circuit-first stage keeps: the circuit and the constant edges positional heads read.
        self.scaffold = torch.maximum(self.circuit, self._edge_mask(design.constant_edges))
        self.real = self.graph.real_edge_mask.float()
        #: Per head and MLP (the input node excluded): is it a node of the circuit? The floors compare the rest to it.
        self.inside = torch.tensor([n in design.circuit_nodes for n in self.layout.forward_names[1:]])
        self.norm_floor = 0.0  # see clean_run
        self.spread_floor = 0.0  # see _spread_shortfall
        #: Which median of the circuit's nodes the floors are relative to: "median" (the lower one, torch's) or
        #: "upper-median". With two circuit nodes that is the quieter or the louder; where one of them does its
        #: work elsewhere (MCQA's letter mover, nearly silent at the final token) only the louder one keeps the
        #: rest of the model comparable to the node that is doing the work there.
        self.floor_reference = "median"

    def _edge_mask(self, names) -> torch.Tensor:
        mask = torch.zeros(self.layout.n_forward, self.layout.n_backward)
        for name in names:
            mask[self.graph.edge_index(name)] = 1.0
        return mask

    # -------------------------------------------------------------- losses
    def _logits(self, batch: Batch, **kwargs) -> torch.Tensor:
        return self.engine.forward(batch.clean, batch.mask, logit_positions=batch.last, **kwargs).logits

    def _keeping(self, keep: torch.Tensor):
        """The engine mask that keeps ``keep``'s real edges (the layout's padding slots are always 'kept')."""
        return CircuitMask(keep * self.real + (1 - self.real))

    def clean_run(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Behaviour loss, norm-floor loss and the (detached) clean logits, from one recorded forward.

        The norm floor keeps every node outside the circuit, at every real token, at least ``norm_floor`` times
        the median norm of the circuit's nodes at that token: strictness alone is most easily met by silencing
        everything else, and a circuit that is the only thing speaking (at the answer position above all) is
        trivially detectable.
        """
        out = self.engine.forward(batch.clean, batch.mask, record=True, logit_positions=batch.last)
        floor = out.logits.new_zeros(())
        outputs = out.sources.stacked()[:, 1:]  # [B, F-1, T, d]: heads and MLPs, not the input
        inside = self.inside
        if self.norm_floor > 0:
            norms = outputs.norm(dim=-1)  # [B, F-1, T]
            target = self.norm_floor * self._reference(norms[:, inside], dim=1).detach()  # [B, T]
            shortfall = torch.relu(1 - norms[:, ~inside] / target.clamp(min=1e-6)[:, None]).pow(2)
            real = batch.mask.float()[:, None, :]
            floor = (shortfall * real).sum() / (real.sum() * int((~inside).sum()))
        if self.spread_floor > 0:
            floor = floor + self._spread_shortfall(outputs, batch.mask.float())
        return torch.nn.functional.cross_entropy(out.logits, batch.answers), floor, out.logits.detach()

    def circuit_alone(self, batch: Batch, counterfactuals: bool = False) -> torch.Tensor:
        """Cross-entropy of the circuit by itself: every edge outside it (and outside ``constant_edges``, which
        carry the same values in every prompt and are what positional heads and queries read) zero-ablated.

        The first stage of a circuit-first schedule. Behaviour training lets the whole model share the task
        (IOI's layer-0 heads learn to write names straight to the logits), and strictness then has to undo a
        distributed solution, which it does not manage in any schedule tried; trained alone, the planted
        circuit learns IOI in a few hundred steps, and SIIT then only has to make everything else harmless.

        With ``counterfactuals`` the counterfactual prompts are trained too, each with its own answer: MCQA's
        prompts always letter their options A-D, so a circuit trained on them alone can answer by option index
        and never learn to move letters, which its randomLetter counterfactuals (and the interchanges) need.
        """
        ids, answers = batch.clean, batch.answers
        if counterfactuals:
            ids = torch.cat([ids, *batch.cf.values()])
            answers = torch.cat([answers, *batch.cf_answers.values()])
        copies = len(ids) // len(batch.clean)
        logits = self.engine.forward(ids, batch.mask.repeat(copies, 1), logit_positions=batch.last.repeat(copies),
                                     mask=self._keeping(self.scaffold), ablation=Ablation.zero()).logits
        return torch.nn.functional.cross_entropy(logits, answers)

    def hint_positions(self, example) -> list[tuple[int, int]]:
        """(query, key) token positions of each of the design's attention hints in ``example``'s prompt."""
        positions = role_positions(self.tokenizer, example.prompt, example.spans)
        return [(positions[h.query][-1] + h.query_offset, positions[h.key][-1] + h.key_offset)
                for h in self.design.attention_hints]

    def attention_hints(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of each hinted head's attention at its query token against its key token (plain HF
        forward with attention weights: these heads are in layer 0, whose inputs no ablation changes)."""
        hints = self.design.attention_hints
        queries, keys = torch.tensor([self.hint_positions(example) for example in batch.examples]).unbind(-1)
        attentions = self.model(input_ids=batch.clean, attention_mask=batch.mask, output_attentions=True).attentions
        rows = torch.arange(len(batch.examples))
        losses = []
        for i, hint in enumerate(hints):
            layer, head = (int(part[1:]) for part in hint.head.split("."))
            weights = attentions[layer][rows, head, queries[:, i], keys[:, i]]
            losses.append(-torch.log(weights.clamp(min=1e-9)).mean())
        return torch.stack(losses).mean()

    def _counterfactual_sources(self, batch: Batch, kind: str):
        """The counterfactual run's source outputs, *with* gradient when training: the strictness term can only
        make a non-circuit node's output carry nothing of the counterfactual if its weights see that run."""
        return self.engine.forward(batch.cf[kind], batch.mask, record=True, logit_positions="none").sources

    def _ablated_logits(self, batch: Batch, kind: str, keep: torch.Tensor) -> torch.Tensor:
        ablation = Ablation("patching", self._counterfactual_sources(batch, kind), batch.mask)
        return self._logits(batch, mask=self._keeping(keep), ablation=ablation)

    def _reference(self, values: torch.Tensor, dim: int) -> torch.Tensor:
        """The circuit nodes' median along ``dim`` (see ``floor_reference``)."""
        if self.floor_reference == "upper-median":
            return torch.quantile(values, 0.5, dim=dim, interpolation="higher")
        return values.median(dim=dim).values

    def _spread_shortfall(self, outputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """How far nodes outside the circuit fall below ``spread_floor`` times the circuit's median variation.

        Variation of node j at position t: the RMS distance of its outputs from their mean across the batch's
        prompts (real tokens only). A node that outputs the same vector for every prompt has a norm but carries
        nothing, and is as easy to tell from the circuit as a silent one.
        """
        weights = mask[:, None, :, None]  # [B, 1, T, 1]
        count = weights.sum(0).clamp(min=1.0)  # [1, T, 1]
        mean = (outputs * weights).sum(0) / count  # [F-1, T, d]
        variance = ((((outputs - mean) ** 2).sum(-1, keepdim=True) * weights).sum(0) / count).squeeze(-1)
        # clamped before the root: a position every prompt shares (IOI's first word) has variance 0 exactly, where
        # the root's gradient is infinite and would turn the whole step into NaN
        spread = variance.clamp(min=1e-12).sqrt()
        inside = self.inside
        target = self.spread_floor * self._reference(spread[inside], dim=0).detach()  # [T]
        shortfall = torch.relu(1 - spread[~inside] / target.clamp(min=1e-6)).pow(2)  # [outside, T]
        seen = (mask.sum(0) > 1).float()  # positions where at least two prompts have a real token
        return (shortfall * seen).sum() / (seen.sum() * int((~inside).sum())).clamp(min=1.0)

    def strict(self, batch: Batch, kind: str, keep_probability: float,
               clean_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Non-circuit edges ablated (each kept with ``keep_probability``); the answer must not change.

        With ``clean_logits`` the term also asks for the unchanged *logit difference* (answer vs the
        counterfactual's answer, relative to the clean one, squared): cross-entropy stops pulling once the answer
        wins by a wide margin, while faithfulness is measured on the logit difference itself.
        """
        random_keep = (torch.rand(self.circuit.shape) < keep_probability).float()
        keep = torch.maximum(self.circuit, random_keep)
        logits = self._ablated_logits(batch, kind, keep)
        loss = torch.nn.functional.cross_entropy(logits, batch.answers)
        if clean_logits is not None:
            rows = torch.arange(len(batch.answers))
            cf = batch.cf_answers[kind]
            ablated = logits[rows, batch.answers] - logits[rows, cf]
            clean = clean_logits[rows, batch.answers] - clean_logits[rows, cf]
            loss = loss + (((ablated - clean) / clean.abs().clamp(min=1.0)) ** 2).mean()
        return loss

    def _interchanged_logits(self, batch: Batch, spec: Interchange, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits with ``spec.node``'s output (every position) taken from the ``kind`` counterfactual, and labels."""
        group_index, unit = node_group(self.engine, spec.node)
        swapped = self._counterfactual_sources(batch, kind).groups[group_index][:, unit]

        def edit(group, output):
            if self.engine.groups.index(group) != group_index:
                return output
            output = output.clone()
            output[:, unit] = swapped
            return output

        labels = torch.tensor([self._label_token(spec.variable, e.variables, e.counterfactual(kind).variables)
                               for e in batch.examples])
        return self._logits(batch, edit_sources=edit), labels

    def interchange(self, batch: Batch, spec: Interchange, kind: str) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(*self._interchanged_logits(batch, spec, kind))

    def _label_token(self, variable: str, base: dict, source: dict) -> int:
        return answer_token(self.tokenizer, interchange_label(self.task, variable, base, source), "label")

    # ----------------------------------------------------------------- metrics
    @torch.no_grad()
    def evaluate(self, batch: Batch) -> dict[str, float]:
        """Accuracy, accuracy with every edge outside the ground truth ablated (per kind, averaged), and IIA."""
        def hits(logits, labels) -> float:
            return float((logits.argmax(-1) == labels).float().mean())

        out = {"accuracy": hits(self._logits(batch), batch.answers)}
        circuit_only = [hits(self._ablated_logits(batch, kind, self.circuit), batch.answers) for kind in batch.cf]
        out["circuit_only_accuracy"] = sum(circuit_only) / len(circuit_only)
        for spec in self.design.interchanges:
            scores = [hits(*self._interchanged_logits(batch, spec, kind)) for kind in spec.kinds]
            out[f"iia_{spec.variable}"] = sum(scores) / len(scores)
        return out


def train(args: argparse.Namespace) -> dict:
    design = DESIGNS[args.design]
    torch.set_num_threads(args.threads)
    tokenizer = tokenizer_from(str(model_path("gpt2-tasks")))  # the zoo's shared word-level tokenizer
    trainer = Trainer(design, tokenizer, args.seed)
    trainer.norm_floor, trainer.spread_floor = args.norm_floor, args.spread_floor
    trainer.floor_reference = args.floor_reference
    parent = _continue_from(trainer, Path(args.init)) if args.init else None
    val_batch = _batch(trainer.task.examples("validation", args.val_examples), design.strict_kinds, tokenizer)
    optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.98))
    history = []
    started = time.perf_counter()
    trainer.model.train()
    step = 0
    for step in range(1, args.steps + 1):
        lr = args.lr * min(1.0, step / 200) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))  # warm-up, cosine
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = _batch(_draw(trainer.task, trainer.rng, args.batch_size), design.strict_kinds, tokenizer)
        optimizer.zero_grad(set_to_none=True)
        if step <= args.warmup_steps:  # learn the task first (plain forward: fast), then plant the circuit
            logits = trainer.model(input_ids=batch.clean, attention_mask=batch.mask).logits
            losses = {"behaviour": torch.nn.functional.cross_entropy(logits[torch.arange(len(batch.last)), batch.last],
                                                                     batch.answers)}
            total = losses["behaviour"]
        elif step <= args.warmup_steps + args.circuit_steps:  # or: the circuit learns it alone first
            losses = {"circuit_alone": trainer.circuit_alone(batch, args.circuit_on_counterfactuals)}
            total = losses["circuit_alone"]
            if design.attention_hints and args.hint_weight > 0:
                losses["hints"] = trainer.attention_hints(batch)
                total = total + args.hint_weight * losses["hints"]
        else:
            losses = {}
            losses["behaviour"], losses["norm_floor"], clean_logits = trainer.clean_run(batch)
            spec = trainer.rng.choice(design.interchanges)
            losses["iit"] = trainer.interchange(batch, spec, trainer.rng.choice(spec.kinds))
            # half the time everything outside the circuit is ablated (what the evaluation measures), otherwise a
            # random share of it (so every partial ablation is covered too)
            keep_probability = 0.0 if trainer.rng.random() < args.full_ablation_share else trainer.rng.random()
            losses["strict"] = trainer.strict(batch, trainer.rng.choice(design.strict_kinds), keep_probability,
                                              clean_logits if args.faithfulness else None)
            total = (losses["behaviour"] + args.iit_weight * losses["iit"] + args.strict_weight * losses["strict"]
                     + args.norm_weight * losses["norm_floor"])
        total.backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            trainer.model.eval()
            metrics = trainer.evaluate(val_batch)
            trainer.model.train()
            elapsed = time.perf_counter() - started
            history.append({"step": step, "seconds": round(elapsed, 1),
                            "loss": {k: round(float(v.detach()), 4) for k, v in losses.items()}, "validation": metrics})
            print(f"step {step:5d} {elapsed:6.0f}s " + " ".join(f"{k} {float(v.detach()):.3f}" for k, v in losses.items())
                  + " | " + " ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
            if elapsed > args.minutes * 60:
                break
    trainer.model.eval()
    test_batch = _batch(trainer.task.examples("test", args.val_examples), design.strict_kinds, tokenizer)
    card = {"design": design.name, "task": design.task, "description": design.description,
            "counterfactual": design.counterfactual,
            "circuit_nodes": list(design.circuit_nodes), "circuit_edges": list(design.circuit_edges),
            "constant_edges": list(design.constant_edges),
            "interchanges": [{"variable": s.variable, "node": s.node, "kinds": list(s.kinds)}
                             for s in design.interchanges],
            "strict_kinds": list(design.strict_kinds),
            "command": "python -m training.planted " + shlex.join(args.argv),
            # a continued run keeps the card of the run it started from (whose own parent is in it, and so on)
            "continued_from": parent,
            "args": {k: v for k, v in vars(args).items() if k not in ("argv", "out")},
            "steps": step, "train_seconds": round(time.perf_counter() - started, 1),
            "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "test": trainer.evaluate(test_batch), "validation": trainer.evaluate(val_batch), "history": history,
            "torch": torch.__version__, "machine": f"{platform.machine()}, {args.threads} threads"}
    if args.out:
        save(trainer, tokenizer, Path(args.out), card)
    return card


def _continue_from(trainer: Trainer, folder: Path) -> dict:
    """Load a planted model's weights into ``trainer`` (same design) and return that run's card."""
    card = planted_card(str(folder))
    if card.get("design") != trainer.design.name:
        raise MibenchError(f"{folder} holds design {card.get('design')!r}, not {trainer.design.name!r}")
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = trainer.model.load_state_dict(state, strict=False)
    if unexpected or any("lm_head" not in k for k in missing):  # lm_head is tied to the embedding, not saved
        raise MibenchError(f"{folder}/model.safetensors does not fit design {trainer.design.name!r}: "
                           f"missing {missing}, unexpected {unexpected}")
    trainer.model.tie_weights()
    card.pop("history", None)
    return card


def save(trainer: Trainer, tokenizer, out: Path, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    truth = Graph(trainer.layout)
    truth.edges_in_graph = trainer.circuit.bool()
    names = trainer.layout.forward_names
    truth.nodes_in_graph = torch.tensor([name in trainer.design.circuit_nodes for name in names])
    (out / GROUND_TRUTH_DIR).mkdir(exist_ok=True)
    save_json(truth, out / GROUND_TRUTH_DIR / f"{trainer.design.task}.json")
    zoo_card = {"arch": "gpt2", "planted": True, "tasks": {trainer.design.task: str(trainer.task.card.version)},
                "ground_truth": {trainer.design.task: {"counterfactual": trainer.design.counterfactual}},
                "accuracy": {trainer.design.task: {"test": card["test"]["accuracy"],
                                                   "validation": card["validation"]["accuracy"]}},
                "config": {"layers": trainer.design.layers, "width": trainer.design.width,
                           "heads": trainer.design.heads, "kv_heads": trainer.design.heads},
                "parameters": card["parameters"], "planted_circuit": card}
    (out / CARD_FILE).write_text(json.dumps(zoo_card, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.planted", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--design", default=IOI_DESIGN.name, choices=sorted(DESIGNS))
    parser.add_argument("--out", help="model folder to write (HF files, ground_truth/, zoo_card.json)")
    parser.add_argument("--init", metavar="FOLDER",
                        help="continue from a planted model of the same design (its card is kept in the new one)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="first train the task alone (plain forward) for this many steps, then plant the circuit")
    parser.add_argument("--circuit-steps", type=int, default=0,
                        help="steps (after any warm-up) in which only the circuit is trained, everything outside it "
                             "zero-ablated, before the SIIT losses start")
    parser.add_argument("--circuit-on-counterfactuals", action="store_true",
                        help="the circuit-first stage also trains on the counterfactual prompts (with their answers)")
    parser.add_argument("--hint-weight", type=float, default=1.0,
                        help="weight of the design's attention hints during the circuit-first stage (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--iit-weight", type=float, default=1.0)
    parser.add_argument("--strict-weight", type=float, default=1.0)
    parser.add_argument("--full-ablation-share", type=float, default=0.5,
                        help="share of strictness steps that ablate every non-circuit edge (else a random share)")
    parser.add_argument("--norm-floor", type=float, default=0.0,
                        help="keep each non-circuit node's output norm above this share of the circuit's median")
    parser.add_argument("--spread-floor", type=float, default=0.0,
                        help="keep each non-circuit node's variation across prompts above this share of the circuit's")
    parser.add_argument("--floor-reference", choices=("median", "upper-median"), default="median",
                        help="the circuit nodes' median the floors are relative to, at each token (lower or upper)")
    parser.add_argument("--norm-weight", type=float, default=1.0, help="weight of the norm and spread floors")
    parser.add_argument("--faithfulness", action="store_true",
                        help="strictness also matches the clean logit difference, not only the answer")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--val-examples", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=30.0, help="stop after this much training time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", metavar="MODEL",
                        help="do not train: print the ground-truth proofs of a planted model (name or folder)")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


# ========================================================================================= the proofs
@torch.no_grad()
@torch.no_grad()
def ground_truth_checks(model: str, task_id: str, *, n_examples: int = 200, kinds: tuple[str, ...] | None = None,
                        batch_size: int = 50) -> dict:
    """Evidence that a shipped ground truth is the model's mechanism, on the task's test split.

    Per counterfactual kind (the ground truth's own counterfactual first, then the other kinds it was trained on):

    * ``full_logit_difference``: mean logit difference (answer vs the counterfactual's answer), unmodified model;
    * ``circuit_only_fraction``: the fraction of it kept with every edge outside the ground truth ablated (MIB's
      patching) -- at least 0.95 for a real circuit; None for a kind whose counterfactual keeps every answer
      (its logit difference is 0 by construction); ``circuit_only_accuracy`` likewise for the accuracy;
    * ``node_ablation_loss`` / ``edge_ablation_loss`` (the ground truth's counterfactual): the fraction lost when
      one circuit node (all its outgoing edges) or one circuit edge is ablated -- each should hurt;
    * ``output_norms`` / ``answer_position_norms``: the mean L2 norm of every head's and MLP's output over real
      tokens / at the answer position, so one can see that the circuit is not marked out by silent neighbours;
    * ``answer_position_spread``: how much each node's answer-position output varies across prompts (relative to
      its norm), so one can see it is not marked out by constant neighbours either.
    """
    loaded = load_model(model)
    engine = PatchingEngine(loaded.adapter)
    layout = engine.layout
    path = ground_truth_path(model, task_id)
    if path is None:
        raise MibenchError(f"model {model!r} ships no ground truth for task {task_id!r}")
    truth = load_circuit(path, layout=layout)
    real = truth.real_edge_mask
    circuit = (truth.edges_in_graph & real).float()
    task = load_task(task_id)
    if kinds is None:
        own = ground_truth_counterfactual(model, task_id) or task.card.default_counterfactual
        kinds = (own, *[k for k in planted_card(model).get("strict_kinds", ()) if k != own])
    examples = task.examples("test", n_examples)
    names = layout.forward_names
    circuit_nodes = sorted({names[f] for f in circuit.nonzero()[:, 0].tolist()}, key=names.index)
    edges = [truth.edge_name(f, b) for f, b in circuit.nonzero().tolist()]

    def keep_all_but(drop: torch.Tensor) -> CircuitMask:
        return CircuitMask((1 - drop.float()) * real.float() + (~real).float())

    masks = {"circuit_only": CircuitMask(circuit + (~real).float())}
    for node in circuit_nodes:
        if node == "logits":
            continue
        drop = torch.zeros_like(circuit)
        drop[names.index(node)] = 1
        masks[f"node:{node}"] = keep_all_but(drop * real)
    for name in edges:
        drop = torch.zeros_like(circuit)
        drop[truth.edge_index(name)] = 1
        masks[f"edge:{name}"] = keep_all_but(drop)
    order = list(masks)
    stacked = CircuitMask.stack([masks[k] for k in order])
    full, full_accuracy, kept, kept_accuracy = {}, {}, {k: {} for k in order}, {}
    norms = torch.zeros(layout.n_forward, dtype=torch.float64)
    answer_norms = torch.zeros(layout.n_forward, dtype=torch.float64)
    answer_outputs: list[torch.Tensor] = []  # [B, F, d] per batch, at the answer position
    tokens = prompts = 0.0
    for kind in kinds:
        sums = torch.zeros(len(order), dtype=torch.float64)
        full_sum, full_hits, circuit_hits, count, same_answer = 0.0, 0, 0, 0, True
        for batch in build_batches(examples, loaded.tokenizer, kind, batch_size).batches:
            clean = engine.forward(batch.clean_ids, batch.attention_mask, record=True,
                                   logit_positions=batch.last_positions)
            full_sum += float(logit_difference(clean.logits, batch.answers, batch.cf_answers).sum())
            same_answer = same_answer and bool((batch.answers == batch.cf_answers).all())
            full_hits += int((clean.logits.argmax(-1) == batch.answers).sum())
            if kind == kinds[0]:
                weights = batch.attention_mask.to(torch.float64)[:, None, :]
                node_norms = clean.sources.stacked().double().norm(dim=-1)  # [B, F, T]
                norms += (node_norms * weights).sum((0, 2))
                answer_norms += node_norms[torch.arange(batch.size), :, batch.last_positions].sum(0)
                answer_outputs.append(clean.sources.stacked()[torch.arange(batch.size), :, batch.last_positions].double())
                tokens += float(batch.attention_mask.sum())
                prompts += batch.size
            ablation = Ablation.patching(engine, batch.cf_ids, batch.attention_mask)
            out = engine.forward(batch.clean_ids, batch.attention_mask, mask=stacked, ablation=ablation,
                                 logit_positions=batch.last_positions).logits
            n = len(order)
            ld = logit_difference(out, batch.answers.repeat(n), batch.cf_answers.repeat(n))
            sums += ld.view(n, batch.size).sum(1).double()
            circuit_hits += int((out[: batch.size].argmax(-1) == batch.answers).sum())
            count += batch.size
        full[kind], full_accuracy[kind] = full_sum / count, full_hits / count
        kept_accuracy[kind] = circuit_hits / count
        for key, total in zip(order, sums.tolist()):
            # a kind that keeps every answer (IOI's s1_io_flip) has a logit difference of 0 by construction:
            # there is no fraction to keep, only the accuracy
            kept[key][kind] = None if same_answer else total / count / full[kind]
    own = kinds[0]
    norms = (norms / max(tokens, 1.0)).tolist()
    answer_norms = (answer_norms / max(prompts, 1.0)).tolist()
    at_answer = torch.cat(answer_outputs)
    spread = ((at_answer - at_answer.mean(0)).norm(dim=-1).mean(0) / at_answer.norm(dim=-1).mean(0).clamp(min=1e-12))
    return {
        "model": model, "task": task_id, "counterfactual": own, "kinds": list(kinds), "examples": len(examples),
        "full_logit_difference": full, "full_accuracy": full_accuracy,
        "circuit_only_fraction": kept["circuit_only"], "circuit_only_accuracy": kept_accuracy,
        "node_ablation_loss": {k.removeprefix("node:"): 1 - kept[k][own] for k in order if k.startswith("node:")},
        "edge_ablation_loss": {k.removeprefix("edge:"): 1 - kept[k][own] for k in order if k.startswith("edge:")},
        "output_norms": {names[i]: round(n, 4) for i, n in enumerate(norms) if i > 0},
        "answer_position_norms": {names[i]: round(n, 4) for i, n in enumerate(answer_norms) if i > 0},
        # mean distance of a node's answer-position output from its mean over prompts, relative to its norm
        "answer_position_spread": {names[i]: round(float(v), 4) for i, v in enumerate(spread) if i > 0},
        "circuit_nodes": circuit_nodes,
    }


def planted_card(model: str) -> dict:
    """The ``planted_circuit`` section of a planted model's ``zoo_card.json`` ({} for any other model)."""
    return model_card(model).get("planted_circuit", {})


def _share(value: float | None) -> str:
    return "n/a (same answer)" if value is None else f"{value:.3f}"


def format_checks(checks: dict) -> str:
    """The proofs as Markdown (the model card's tables)."""
    own = checks["counterfactual"]
    lines = [f"`{checks['model']}` on `{checks['task']}` (test split, {checks['examples']} examples); ground truth "
             f"defined under the `{own}` counterfactual.", ""]
    rows = [[kind, f"{checks['full_accuracy'][kind]:.3f}", f"{checks['full_logit_difference'][kind]:.2f}",
             f"{checks['circuit_only_accuracy'][kind]:.3f}", _share(checks['circuit_only_fraction'][kind])]
            for kind in checks["kinds"]]
    lines += [tabulate(rows, headers=["counterfactual", "accuracy", "logit diff.", "circuit-only accuracy",
                                      "circuit-only / full logit diff."], tablefmt="github"), ""]
    ablations = [[f"node {k}", f"{v:.3f}"] for k, v in checks["node_ablation_loss"].items()]
    ablations += [[f"edge {k}", f"{v:.3f}"] for k, v in checks["edge_ablation_loss"].items()]
    lines += [tabulate(ablations, headers=[f"ablated alone ({own})", "share of the logit difference lost"],
                       tablefmt="github"), ""]
    for key, title in (("output_norms", "Mean output norm per token"),
                       ("answer_position_norms", "Mean output norm at the answer position")):
        norms = checks[key]
        inside = [n for n in norms if n in checks["circuit_nodes"]]
        outside = [n for n in norms if n not in checks["circuit_nodes"]]
        lines.append(f"{title}: " + ", ".join(f"{n} {norms[n]:.2f}" for n in inside) + " (circuit); "
                     + ", ".join(f"{n} {norms[n]:.2f}" for n in outside) + " (outside).")
        lines.append("")
    spread = checks["answer_position_spread"]
    lines.append("Variation across prompts at the answer position (mean distance from the node's mean output / its "
                 "mean norm): " + ", ".join(f"{n} {v:.3f}" for n, v in spread.items()) + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check:
        task = planted_card(args.check).get("task", DESIGNS[args.design].task)
        print(format_checks(ground_truth_checks(args.check, task)))
        return 0
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
