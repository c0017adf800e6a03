"""The patching engine: one forward pass in which every edge of MIB's graph is live or ablated.

This is the only module that runs model internals; methods and the scorer go through it.

Semantics (MIB's evaluation): a destination ``v`` (a head's q/k/v input, an MLP input, or the logits)
reads ``z_v = const + sum_u keep[u, v] * a_u + (1 - keep[u, v]) * a~_u`` where ``a_u`` is source ``u``'s
output in this (intervened) run and ``a~_u`` its ablated value (counterfactual run, mean or zero). The
engine computes it as a correction to the ordinary residual stream ``r`` of the run::

    z_v = r + sum_u (1 - keep[u, v]) * D_u,        D_u = a~_u - a_u

so no ``[sources x receivers x batch x positions x d_model]`` tensor is ever built: for each destination
group one matrix product (with the residual added inside it) contracts the ``[U, V]`` keep-mask with the
source-major ``[U, B*T*d]`` buffer of deltas (see :mod:`mibench.engine.deltas`), and writes the inputs
destination-major, ``[V, B, T, d]``, which the per-head normalisation and projections read in place. When
most sources are ablated the engine uses the equivalent form starting from the ablated residual,
``r~ - sum_u keep[u, v] * D_u``, and multiplies only the kept rows, so sparse circuits cost little.
Destinations that need no correction take the shared residual stream and the model's own fused
projections, so an all-live mask costs one ordinary forward.

Under counterfactual patching a node whose inputs keep no edge reads exactly the counterfactual residual,
so its recorded output is reused rather than recomputed; small circuits therefore cost a fraction of a
forward. With stacked circuits this is decided per circuit: a node is computed only in the rows of the
circuits that need it.

The mask may be differentiable: with ``keep`` all ones and ``requires_grad``, ``-d metric / d keep`` is
exactly the edge attribution ``(a~_u - a_u) . dL/dz_v`` of EAP, computed without materialising per-edge
tensors. Attribution itself runs unpatched and reads ``dL/dz_v`` through ``on_receiver_grad``; there the
heads of a layer share one normalised input and their per-head gradients come from a batched norm VJP
(:mod:`mibench.engine.receiver_grads`).

Several circuits can be evaluated in one call (a ``[C, n_forward, n_backward]`` mask): rows are
circuit-major copies of the batch, and the ablated activations are shared across circuits. The engine evaluates as many
circuits per forward as fit ``max_delta_bytes``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from mibench.engine.attention import attention_pattern_mask, multihead_attention
from mibench.engine.deltas import BufferDeltaStore, DifferentiableDeltaStore, weighted_sum
from mibench.engine.masks import CircuitMask
from mibench.engine.placement import placed_adapter
from mibench.engine.receiver_grads import SharedInputProjection
from mibench.graph.graph import real_edge_mask
from mibench.graph.layout import GraphLayout
from mibench.models.adapter import ModelAdapter


@dataclass(frozen=True)
class SourceGroup:
    """A contiguous run of forward indices produced by one module call (input, a layer's heads, an MLP)."""

    kind: Literal["input", "attn", "mlp"]
    layer: int
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass
class SourceActivations:
    """Source-node outputs, one tensor ``[B, U_g, T, d]`` per :class:`SourceGroup`, in forward order.

    Attention heads' outputs are per-head results ``z_h @ W_O[h]`` (no output bias), as in MIB.
    """

    groups: list[Tensor]

    def stacked(self) -> Tensor:
        """All sources as one ``[B, n_forward, T, d]`` tensor (forward-index order)."""
        return torch.cat(self.groups, dim=1)


@dataclass
class EngineOutput:
    """Logits (``[B, T, vocab]``, ``[B, vocab]`` at chosen positions, or None) and recorded sources."""

    logits: Tensor | None
    sources: SourceActivations | None = None
    #: With ``record_receivers``: the residual stream each receiver group reads, ``[B, T, d]`` each, in
    #: backward order: layer 0's attention input (shared by its q/k/v), layer 0's MLP input, ..., and
    #: finally the logits' input (the last residual, before the final norm).
    receivers: list[Tensor] | None = None

    @classmethod
    def concatenate(cls, outputs: list["EngineOutput"]) -> "EngineOutput":
        """Join the outputs of consecutive row blocks (e.g. chunks of stacked circuits)."""
        logits = None if outputs[0].logits is None else torch.cat([o.logits for o in outputs])
        sources = None
        if outputs[0].sources is not None:
            sources = SourceActivations([torch.cat(parts) for parts in zip(*(o.sources.groups for o in outputs))])
        receivers = None
        if outputs[0].receivers is not None:
            receivers = [torch.cat(parts) for parts in zip(*(o.receivers for o in outputs))]
        return cls(logits, sources, receivers)


ReceiverGradHook = Callable[[str, int, Tensor], None]
SourceEdit = Callable[[SourceGroup, Tensor], Tensor]


def source_groups(layout: GraphLayout) -> list[SourceGroup]:
    groups = [SourceGroup("input", -1, 0, 1)]
    for layer in range(layout.n_layers):
        groups.append(SourceGroup("attn", layer, layout.attn_forward_start(layer), layout.n_heads))
        groups.append(SourceGroup("mlp", layer, layout.mlp_forward_index(layer), 1))
    return groups


@dataclass
class _Run:
    """Per-forward state: the ablation buffers D_g and their sums, plus what the caller asked for."""

    mask: CircuitMask | None
    ablated: list[Tensor | None] | None
    n_circuits: int
    grad_mode: bool
    store: BufferDeltaStore | DifferentiableDeltaStore | None = None
    #: Unpatched with receiver gradients and frozen weights (attribution): heads of a layer read one
    #: normalised input and get their per-head gradients from a batched norm VJP (see receiver_grads).
    shares_receiver_inputs: bool = False
    #: Patching with the counterfactual's own attention mask: nodes with no kept input edge output
    #: exactly their recorded counterfactual value and are not recomputed.
    reuses_ablated_outputs: bool = False
    #: The residual stream built from ablated activations only (the counterfactual run's own residual
    #: under patching). Destinations that keep few edges start from it, so an empty circuit reproduces
    #: the ablated run bit for bit instead of through cancelling sums.
    ablated_resid: Tensor | None = None
    # Non-additive attention (Gemma-2), per group index: pre-norm sum and what the residual received,
    # in this run and in the ablated run.
    attn_sums: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    ablated_attn_sums: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def skips_nodes(self) -> bool:
        """Evaluation under a mask: nodes whose output cannot matter are not computed."""
        return self.patched and not self.grad_mode

    @property
    def tracks_ablated_resid(self) -> bool:
        return self.patched and not self.grad_mode

    @property
    def patched(self) -> bool:
        return self.mask is not None


class PatchingEngine:
    """Runs an adapted HF model with MIB edge masks. See the module docstring for the semantics."""

    def __init__(self, adapter: ModelAdapter, *, group_kv: bool = True,
                 max_delta_bytes: int | None = None) -> None:
        """``max_delta_bytes``: stacked circuits are evaluated in chunks whose ablation-delta buffer
        (``n_forward x rows x T x d`` elements) stays under this size. Default: 256 MiB on CPU, where
        evaluation is memory-bound and measured fastest one circuit at a time, and 8 GiB on accelerators,
        where larger batches fill the device. Results do not depend on it.

        A model spread over devices (an accelerate ``device_map``) runs through
        :func:`~mibench.engine.placement.placed_adapter`: each module gets its inputs on its own device, and
        the engine's state stays on the input embeddings' device (``self.device``)."""
        self.adapter = placed_adapter(adapter)
        self.layout = adapter.layout
        self.groups = source_groups(self.layout)
        #: Compute each K/V head once for all its query heads whenever their inputs are identical.
        #: Turning it off computes K/V per query head (still without duplicating weights); results
        #: are identical either way, which the tests check.
        self.group_kv = group_kv
        self._real_edges = real_edge_mask(self.layout)
        if max_delta_bytes is None:
            max_delta_bytes = 256 * 2**20 if self.adapter.device.type == "cpu" else 8 * 2**30
        self.max_delta_bytes = max_delta_bytes

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.dtype

    @contextmanager
    def frozen_parameters(self) -> Iterator[None]:
        """Turn off parameter gradients for the duration (attribution needs gradients w.r.t.
        activations only; parameter gradients would cost memory and time for nothing)."""
        params = list(self.adapter.model.parameters())
        previous = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(params, previous):
                p.requires_grad_(flag)

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    # ================================================================ public
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        mask: CircuitMask | None = None,
        ablation=None,
        record: bool = False,
        logit_positions: Tensor | Literal["all", "last", "none"] = "all",
        position_ids: Tensor | None = None,
        edit_sources: SourceEdit | None = None,
        on_receiver_grad: ReceiverGradHook | None = None,
        record_receivers: bool = False,
    ) -> EngineOutput:
        """One forward pass of ``input_ids`` ``[B, T]`` (right-padded; ``attention_mask`` marks real tokens).

        Args:
            mask: which edges stay live; None runs the unmodified model. A stacked mask of ``C`` circuits
                returns ``C * B`` rows, circuit-major.
            ablation: an :class:`~mibench.engine.ablation.Ablation` giving the ablated activations
                (required with a mask).
            record: also return every source node's output (e.g. to build a patching ablation).
            logit_positions: ``"all"``, ``"last"`` (last real token per row), ``"none"`` (skip the
                unembedding), or a ``[B]`` tensor of positions.
            edit_sources: optional function applied to each source group's output before anything
                reads it (for interpolation-based attribution).
            on_receiver_grad: optional hook called during backward with ``(kind, layer, grad)`` for every
                receiver input: ``"q"|"k"|"v"`` ``[R, H, T, d]``, ``"mlp"`` ``[R, T, d]``, ``"logits"``
                ``[R, T', d]`` (``layer`` is -1 for logits).
            record_receivers: also return the residual stream read by each receiver group (unpatched
                runs only: under a mask, destinations read per-edge mixtures, not one stream).
        """
        if record_receivers and mask is not None:
            raise ValueError("record_receivers is only defined for an unpatched forward (mask=None)")
        chunk = self._circuits_per_forward(mask, input_ids.shape)
        if chunk is not None:
            outputs = [
                self.forward(input_ids, attention_mask, mask=sub_mask, ablation=ablation, record=record,
                             logit_positions=logit_positions, position_ids=position_ids,
                             edit_sources=edit_sources, on_receiver_grad=on_receiver_grad,
                             record_receivers=record_receivers)
                for sub_mask in mask.chunks(chunk)
            ]
            return EngineOutput.concatenate(outputs)
        adapter = self.adapter
        input_ids = input_ids.to(self.device)
        batch, seq = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        if position_ids is None:
            position_ids = torch.arange(seq, device=self.device).unsqueeze(0)

        run = self._prepare_run(mask, ablation, attention_mask, seq, on_receiver_grad is not None)
        if run.n_circuits > 1:
            input_ids = input_ids.repeat(run.n_circuits, 1)
            attention_mask = attention_mask.repeat(run.n_circuits, 1)
            if position_ids.shape[0] > 1:
                position_ids = position_ids.repeat(run.n_circuits, 1)
        rows = input_ids.shape[0]

        recorded: list[Tensor] = []
        receivers: list[Tensor] = []
        tokens, constant = adapter.embed(input_ids, position_ids)
        tokens = self._emit(run, 0, tokens.unsqueeze(1), recorded, record, edit_sources).squeeze(1)
        resid = tokens if constant is None else tokens + constant
        if run.tracks_ablated_resid:
            ablated_tokens = run.ablated[0]
            run.ablated_resid = _add(constant, None if ablated_tokens is None else ablated_tokens.squeeze(1),
                                     like=resid)
        rotary = adapter.rotary(resid, position_ids)
        masks = {
            None: attention_pattern_mask(attention_mask, None),
        }

        for layer in range(self.layout.n_layers):
            settings = adapter.attention_settings(layer)
            if settings.sliding_window not in masks:
                masks[settings.sliding_window] = attention_pattern_mask(attention_mask, settings.sliding_window)
            if record_receivers:
                receivers.append(resid)
            head_out = self._attention(
                run, layer, resid, rotary if settings.rotary else None, masks[settings.sliding_window],
                settings, on_receiver_grad,
            )
            group_index = 1 + 2 * layer
            head_out = self._emit(run, group_index, head_out, recorded, record, edit_sources)
            bias = adapter.attention_weights(layer).bo
            attn_sum = _sum_heads(head_out, bias)
            received = adapter.attn_post(layer, attn_sum)
            if not adapter.attn_is_additive:
                run.attn_sums[group_index] = (attn_sum, received)
            resid = resid + received
            if run.tracks_ablated_resid:
                self._add_ablated_attention(run, group_index, layer, bias, resid)

            mlp_cols, mlp_prev = [self.layout.mlp_backward_index(layer)], self.layout.mlp_prev_index(layer)
            if record_receivers:
                receivers.append(resid)
            # Which circuits must compute this MLP ([C]); None: every row does.
            live = (self._live_sources(run, self.groups[group_index + 1], mlp_cols, mlp_prev)[:, 0]
                    if run.skips_nodes else None)
            if live is not None and not bool(live.any()):
                mlp_out = self._ablated_output(run, group_index + 1, rows, resid)
            elif live is not None and not bool(live.all()):
                mlp_out = self._mlp_of_circuits(run, layer, live.nonzero().flatten(), mlp_cols, mlp_prev, resid)
            else:
                mlp_in = self._destination_inputs(run, mlp_cols, mlp_prev, resid)
                mlp_in = resid if mlp_in is None else mlp_in[0]
                if on_receiver_grad is not None and mlp_in.requires_grad:
                    mlp_in = mlp_in.clone()
                    mlp_in.register_hook(lambda g, layer=layer: on_receiver_grad("mlp", layer, g))
                mlp_out = adapter.mlp(layer, mlp_in).unsqueeze(1)
            mlp_out = self._emit(run, group_index + 1, mlp_out, recorded, record, edit_sources)
            resid = resid + mlp_out.squeeze(1)
            if run.tracks_ablated_resid and run.ablated[group_index + 1] is not None:
                run.ablated_resid = run.ablated_resid + run.ablated[group_index + 1].squeeze(1)

        if record_receivers:
            receivers.append(resid)
        logits = self._logits(run, resid, attention_mask, logit_positions, on_receiver_grad)
        return EngineOutput(logits, SourceActivations(recorded) if record else None,
                            receivers if record_receivers else None)

    # ============================================================ internals
    def _circuits_per_forward(self, mask: CircuitMask | None, shape: torch.Size) -> int | None:
        """How many stacked circuits to evaluate per forward, or None to run them all at once."""
        if mask is None or mask.n_circuits is None or mask.n_circuits == 1:
            return None
        batch, seq = shape
        itemsize = torch.finfo(self.dtype).bits // 8
        per_circuit = self.layout.n_forward * batch * seq * self.layout.d_model * itemsize
        fits = max(1, self.max_delta_bytes // per_circuit)
        return None if fits >= mask.n_circuits else fits

    def _prepare_run(self, mask: CircuitMask | None, ablation, attention_mask: Tensor, seq: int,
                     want_receiver_grads: bool) -> _Run:
        batch = attention_mask.shape[0]
        if mask is None:
            return _Run(None, None, 1, want_receiver_grads,
                        shares_receiver_inputs=want_receiver_grads and not self._trains_parameters())
        mask.check_layout(self.layout)
        if ablation is None:
            raise ValueError("a circuit mask needs an ablation (patching, mean or zero) for its ablated edges")
        grad_mode = mask.requires_grad or want_receiver_grads or self._differentiates(ablation)
        mask = CircuitMask(
            mask.edges.to(device=self.device, dtype=self.dtype),
            None if mask.neurons is None else mask.neurons.to(device=self.device, dtype=self.dtype),
        )
        all_live = self.is_complete(mask)
        if not grad_mode and all_live:
            return _Run(None, None, mask.n_circuits or 1, False)
        ablated: list[Tensor | None]
        if ablation.sources is None:
            ablated = [None] * len(self.groups)
        else:
            ablated = [g.to(device=self.device, dtype=self.dtype) for g in ablation.sources.groups]
            if len(ablated) != len(self.groups):
                raise ValueError(f"ablation has {len(ablated)} source groups, the model has {len(self.groups)}")
            for g in ablated:
                if g.shape[0] not in (1, batch):
                    raise ValueError(f"ablated activations have {g.shape[0]} rows for a batch of {batch}")
        n_circuits = mask.n_circuits or 1
        if grad_mode and not all_live:
            store = DifferentiableDeltaStore()
        else:  # evaluation, or gradients at keep == 1 where d z / d D vanishes
            store = BufferDeltaStore(self.layout.n_forward, n_circuits * batch, seq, self.layout.d_model,
                                     self.dtype, self.device, reuse=not grad_mode)
        recorded_mask = getattr(ablation, "attention_mask", None)
        reuses = (ablation.kind == "patching" and not grad_mode and recorded_mask is not None
                  and recorded_mask.shape == attention_mask.shape and bool((recorded_mask == attention_mask).all()))
        return _Run(mask, ablated, n_circuits, grad_mode, store, reuses)

    def _differentiates(self, ablation) -> bool:
        """Does autograd need this masked forward (a model being trained through it, or ablated activations
        that carry gradients)? Evaluation reuses buffers in place and skips nodes whose output cannot matter,
        which would silently cut those gradients; callers that only evaluate run under ``torch.no_grad``."""
        if not torch.is_grad_enabled():
            return False
        if ablation.sources is not None and any(g.requires_grad for g in ablation.sources.groups):
            return True
        return self._trains_parameters()

    def _trains_parameters(self) -> bool:
        return any(p.requires_grad for p in self.adapter.model.parameters())

    def is_complete(self, mask: CircuitMask) -> bool:
        """Does the mask keep every real edge (and every neuron)? Such a forward is the unpatched run."""
        real = self._real_edges.to(mask.edges.device)
        edges_live = bool((mask.edges[..., real] == 1).all())
        neurons_live = mask.neurons is None or bool((mask.neurons == 1).all())
        return edges_live and neurons_live

    def _emit(self, run: _Run, index: int, output: Tensor, recorded: list[Tensor], record: bool,
              edit: SourceEdit | None) -> Tensor:
        """Register a source group's output ``[R, U, T, d]``: edit, record, and store its ablation delta."""
        if edit is not None:
            output = edit(self.groups[index], output)
        if record:
            recorded.append(output)
        if run.patched:
            run.store.put(self.groups[index].start, run.ablated[index], output, run.n_circuits)
        return output

    # ------------------------------------------------------------ corrections
    def _needs_correction(self, run: _Run, cols: list[int], prev: int) -> bool:
        if not run.patched:
            return False
        if run.grad_mode:
            return True
        edges = run.mask.edges[..., :prev, cols]
        if bool((edges != 1).any()):
            return True
        return run.mask.neurons is not None and bool((run.mask.neurons[..., :prev, :] != 1).any())

    def _add_ablated_attention(self, run: _Run, index: int, layer: int, bias: Tensor | None,
                               like: Tensor) -> None:
        ablated = run.ablated[index]
        ablated_sum = _add(None, bias, like=like) if ablated is None else _sum_heads(ablated, bias)
        ablated_received = self.adapter.attn_post(layer, ablated_sum)
        if not self.adapter.attn_is_additive:
            run.ablated_attn_sums[index] = (ablated_sum, ablated_received)
        run.ablated_resid = run.ablated_resid + ablated_received

    def _destination_inputs(self, run: _Run, cols: list[int], prev: int, resid: Tensor,
                            positions: Tensor | None = None, circuits: Tensor | None = None) -> Tensor | None:
        """Patched inputs ``[V, R, T, d]`` of destination columns ``cols`` (None: all read ``resid``).

        Destination-major, as the weighted sums produce them: each destination's input is one contiguous
        block, which normalisation and the per-head projections read without a copy.

        Two exact forms of the same sum; for each circuit the one touching fewer source rows is used:

        * mostly kept:    ``z_v = r  + sum_u (1 - keep[u, v]) * D_u``   (this run's residual ``r``)
        * mostly ablated: ``z_v = r~ - sum_u keep[u, v] * D_u``         (the ablated residual ``r~``)

        With neuron masks ``keep[u, v]`` becomes ``keep[u, v] * neurons[u]`` (elementwise over ``d``).
        Gradients always use the first form, whose value is exactly ``r`` at ``keep == 1``.
        ``positions`` (``[R]``) restricts everything to one position per row (the logits); ``circuits``
        (indices into the stack) computes only those circuits' rows, in that order.
        """
        if not self._needs_correction(run, cols, prev):
            return None
        rows = resid.shape[0]
        per_circuit = rows // run.n_circuits
        deltas = run.store.prefix(prev)  # [prev, R, T, d]
        if positions is not None:
            deltas = deltas[:, torch.arange(rows, device=deltas.device), positions].unsqueeze(2)
        resid_full, resid = resid, _at_positions(resid, positions)
        ablated_resid = None
        if run.tracks_ablated_resid:
            ablated_resid = _at_positions(_tile_rows(run.ablated_resid, rows).expand_as(resid_full), positions)
        post_sums = {  # non-additive attention layers: pre-norm sums and received outputs, per row
            index: {kind: tuple(_at_positions(_tile_rows(x, rows).expand(rows, *resid_full.shape[1:]), positions)
                                for x in sums[index])
                    for kind, sums in (("run", run.attn_sums), ("ablated", run.ablated_attn_sums)) if index in sums}
            for index in run.attn_sums
        }
        pieces = []
        for circuit in (range(run.n_circuits) if circuits is None else circuits.tolist()):
            block = slice(circuit * per_circuit, (circuit + 1) * per_circuit)
            edges = run.mask.edges if run.mask.n_circuits is None else run.mask.edges[circuit]
            neurons = run.mask.neurons
            if neurons is not None and run.mask.n_circuits is not None:
                neurons = neurons[circuit]
            pieces.append(self._circuit_inputs(
                run, edges[:prev, cols], None if neurons is None else neurons[:prev], deltas[:, block],
                resid[block], None if ablated_resid is None else ablated_resid[block], block, post_sums))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)  # [V, R, T, d]

    def _circuit_inputs(self, run: _Run, keep: Tensor, neurons: Tensor | None, deltas: Tensor, resid: Tensor,
                        ablated_resid: Tensor | None, block: slice, post_sums: dict) -> Tensor:
        """One circuit's destination inputs ``[V, B, T, d]`` (see :meth:`_destination_inputs`)."""
        from_ablated = ablated_resid is not None and self._mostly_ablated(keep, neurons)
        sparse = not run.grad_mode
        if neurons is not None:
            if run.grad_mode and not deltas.requires_grad:
                deltas = deltas.clone()  # the products below save it; the buffer keeps being written
            dropped = deltas * (1 - neurons)[:, None, None, :]
            deltas_kept = deltas - dropped
        weights = -keep if from_ablated else 1 - keep  # signed: the ablated residual loses the kept deltas
        source = deltas_kept if (from_ablated and neurons is not None) else deltas
        base = ablated_resid if from_ablated else resid

        def contribution(rows: slice | Tensor, plus: Tensor | None = None) -> Tensor | None:
            """Signed sum over source ``rows`` (plus ``plus``, fused into the product when given): the
            destination input is ``base + contribution``."""
            part = weighted_sum(weights[rows], source[rows], sparse=sparse, base=plus)
            if neurons is not None and not from_ablated:  # kept edges still drop unselected dimensions
                extra = weighted_sum(keep[rows], dropped[rows], sparse=sparse)
                part = extra if part is None else part.add_(extra)
            return part

        # Additive sources in one product; each non-additive attention layer is mixed before its norm.
        post_groups = [g for i, g in enumerate(self.groups) if i in run.attn_sums and g.start < keep.shape[0]]
        additive = torch.ones(keep.shape[0], dtype=torch.bool, device=keep.device)
        for g in post_groups:
            additive[g.start : g.stop] = False
        # The base rides along in the first product (no separate pass over the output) when nothing else
        # can make that product empty while leaving a contribution.
        fuse_base = neurons is None
        total = contribution(additive if post_groups else slice(None), base if fuse_base else None)
        has_base = fuse_base and total is not None
        for g in post_groups:
            part = contribution(slice(g.start, g.stop))
            if part is None:
                continue
            sums = post_sums[self.groups.index(g)]["ablated" if from_ablated else "run"]
            attn_sum, received = (x[block] for x in sums)
            mixed = self.adapter.attn_post(g.layer, attn_sum + part) - received
            total = mixed if total is None else total.add_(mixed)
        if total is None:
            return base.unsqueeze(0).expand(keep.shape[1], *base.shape)
        return total if has_base else total.add_(base)

    def _mostly_ablated(self, keep: Tensor, neurons: Tensor | None) -> bool:
        """True when fewer source rows carry kept edges than carry ablated ones."""
        if neurons is not None:
            return True
        kept_rows = int((keep != 0).any(-1).sum())
        ablated_rows = int((keep != 1).any(-1).sum())
        return kept_rows < ablated_rows

    # -------------------------------------------------------------- attention
    def _attention(self, run: _Run, layer: int, resid: Tensor, rotary, pattern_mask: Tensor, settings,
                   on_receiver_grad: ReceiverGradHook | None) -> Tensor:
        """Per-head outputs ``[R, H, T, d]`` of one attention layer, with q/k/v inputs patched per head."""
        adapter, layout = self.adapter, self.layout
        n_heads, group_size = adapter.n_heads, adapter.group_size
        weights = adapter.attention_weights(layer)
        prev = layout.attn_prev_index(layer)
        start = layout.attn_backward_start(layer)
        per_kind_cols = {
            kind: [start + i * n_heads + h for h in range(n_heads)] for i, kind in enumerate(("q", "k", "v"))
        }
        if run.skips_nodes:
            qkv_cols = per_kind_cols["q"] + per_kind_cols["k"] + per_kind_cols["v"]
            live = self._live_sources(run, self.groups[1 + 2 * layer], qkv_cols, prev)  # [C, H]
            heads, circuits = live.any(0), live.any(1)
            if not (bool(heads.all()) and bool(circuits.all())):
                return self._attention_of_heads(run, layer, heads.nonzero().flatten(),
                                                None if bool(circuits.all()) else circuits.nonzero().flatten(),
                                                resid, rotary, pattern_mask, settings, per_kind_cols, prev, weights)
        per_head = run.grad_mode or on_receiver_grad is not None
        needs = {kind: per_head or self._needs_correction(run, cols, prev) for kind, cols in per_kind_cols.items()}

        if not any(needs.values()):
            normed = adapter.attn_pre_norm(layer, resid)
            q, k, v = (x.unflatten(-1, (-1, adapter.d_head)).transpose(1, 2)
                       for x in adapter.fused_qkv(layer, normed))
        else:
            grouped = {
                kind: (not per_head and kind != "q" and group_size > 1 and self.group_kv
                       and self._group_inputs_identical(run, per_kind_cols[kind], prev))
                for kind in ("q", "k", "v")
            }
            # Unpatched with receiver gradients (attribution): kinds whose heads each have their own weight
            # read the one shared input; only their backward is per head (see receiver_grads).
            shared_grad = set()
            if run.shares_receiver_inputs and resid.requires_grad:
                shared_grad = {"q"} if group_size > 1 else {"q", "k", "v"}
            cols: list[int] = []
            spans: dict[str, slice] = {}
            for kind in ("q", "k", "v"):
                if not needs[kind] or kind in shared_grad:
                    continue
                kind_cols = per_kind_cols[kind][::group_size] if grouped[kind] else per_kind_cols[kind]
                spans[kind] = slice(len(cols), len(cols) + len(kind_cols))
                cols += kind_cols
            inputs = self._destination_inputs(run, cols, prev, resid) if cols else None
            projected = {}
            shared_normed = None
            by_kind = {"q": (weights.wq, weights.bq), "k": (weights.wk, weights.bk), "v": (weights.wv, weights.bv)}
            if shared_grad:
                kinds = [kind for kind in ("q", "k", "v") if kind in shared_grad]

                def report(grads: list[Tensor], kinds=kinds, layer=layer) -> None:
                    for kind, grad in zip(kinds, grads, strict=True):
                        on_receiver_grad(kind, layer, grad)

                outputs = SharedInputProjection.apply(
                    resid, lambda x, layer=layer: adapter.attn_pre_norm(layer, x), report,
                    *(tensor for kind in kinds for tensor in by_kind[kind]))
                projected.update(zip(kinds, outputs, strict=True))
            for kind, (weight, bias) in by_kind.items():
                if kind in shared_grad:
                    continue
                if kind in spans:
                    if inputs is not None:
                        z = inputs[spans[kind]]
                    else:
                        z = resid.unsqueeze(0).expand(spans[kind].stop - spans[kind].start, -1, -1, -1)
                    if on_receiver_grad is not None and z.requires_grad:
                        z = z.clone()
                        z.register_hook(lambda g, kind=kind: on_receiver_grad(kind, layer, g.transpose(0, 1)))
                    projected[kind] = _project_head_major(adapter.attn_pre_norm(layer, z), weight, bias)
                else:
                    if shared_normed is None:
                        shared_normed = adapter.attn_pre_norm(layer, resid)
                    projected[kind] = _project_shared(shared_normed, weight, bias)
            q, k, v = projected["q"], projected["k"], projected["v"]
            if k.shape[1] != v.shape[1]:
                # One of K/V is per query head, the other grouped: give the attention one structure.
                k, v = (_ungroup(x, n_heads) for x in (k, v))

        z = multihead_attention(q, k, v, pattern_mask, settings, rotary)
        return torch.einsum("bhtk,hdk->bhtd", z, weights.wo)

    def _attention_of_heads(self, run: _Run, layer: int, heads: Tensor, circuits: Tensor | None, resid: Tensor,
                            rotary, pattern_mask, settings, per_kind_cols: dict[str, list[int]], prev: int,
                            weights) -> Tensor:
        """Per-head outputs when only ``heads`` need computing, and only in the rows of ``circuits`` (None:
        every circuit); see :meth:`_live_sources`. Everything else outputs its ablated value. The live
        heads are computed one K/V input per query head, from views of the K/V weights indexed by group.
        """
        rows = resid.shape[0]
        out = self._ablated_output(run, 1 + 2 * layer, rows, resid, units=self.adapter.n_heads).clone()
        n = heads.numel()
        if n == 0:
            return out
        index = heads.tolist()
        cols = [per_kind_cols[kind][h] for kind in ("q", "k", "v") for h in index]
        inputs = self._destination_inputs(run, cols, prev, resid, circuits=circuits)
        selected = None if circuits is None else self._circuit_rows(run, circuits, rows)
        if selected is not None:
            pattern_mask = _select_rows(pattern_mask, selected, rows)
            rotary = None if rotary is None else tuple(_select_rows(x, selected, rows) for x in rotary)
        if inputs is None:
            inputs = _select_rows(resid, selected, rows).unsqueeze(0).expand(3 * n, -1, -1, -1)
        normed = self.adapter.attn_pre_norm(layer, inputs)
        kv_heads = heads // self.adapter.group_size
        projected = []
        for i, (weight, bias, which) in enumerate(((weights.wq, weights.bq, heads), (weights.wk, weights.bk, kv_heads),
                                                   (weights.wv, weights.bv, kv_heads))):
            projected.append(_project_head_major(normed[i * n : (i + 1) * n], weight[which],
                                                 None if bias is None else bias[which]))
        z = multihead_attention(*projected, pattern_mask, settings, rotary)
        head_out = torch.einsum("bhtk,hdk->bhtd", z, weights.wo[heads])
        if selected is None:
            out[:, heads] = head_out
        else:
            block = out[selected]
            block[:, heads] = head_out
            out[selected] = block
        return out

    def _mlp_of_circuits(self, run: _Run, layer: int, circuits: Tensor, cols: list[int], prev: int,
                         resid: Tensor) -> Tensor:
        """An MLP's output ``[R, 1, T, d]`` computed only in the rows of ``circuits``; the other circuits'
        rows take its ablated value (see :meth:`_live_sources`)."""
        rows = resid.shape[0]
        out = self._ablated_output(run, 2 + 2 * layer, rows, resid).clone()
        selected = self._circuit_rows(run, circuits, rows)
        z = self._destination_inputs(run, cols, prev, resid, circuits=circuits)
        z = resid[selected] if z is None else z[0]
        out[selected] = self.adapter.mlp(layer, z).unsqueeze(1)
        return out

    @staticmethod
    def _circuit_rows(run: _Run, circuits: Tensor, rows: int) -> Tensor:
        """Row indices of the given stacked circuits (rows are circuit-major blocks of the batch)."""
        per_circuit = rows // run.n_circuits
        offsets = torch.arange(per_circuit, device=circuits.device)
        return (circuits.unsqueeze(1) * per_circuit + offsets).flatten()

    def _live_sources(self, run: _Run, source: SourceGroup, in_cols: list[int], prev: int) -> Tensor:
        """Bool ``[C, U]``: which sources of the group each stacked circuit must compute (evaluation under
        a mask only; ``C`` is 1 for a single circuit).

        Not a source none of whose outgoing edges the circuit keeps: every destination reads its ablated
        value, so its own output only enters through ``D = a~ - a`` and setting ``a = a~`` is exact (any
        ablation). Under counterfactual patching, not one that keeps no *incoming* edge either: it reads
        exactly the counterfactual residual, so its output is the recorded counterfactual one.
        Computing a source anyway is always exact, so a forward computes the union over its circuits, in
        the rows of the circuits that need any of them.
        ``in_cols`` are the group's destination columns, kind-major (``[q heads, k heads, v heads]``).
        """
        live = self._any_kept_out(run, source)
        if run.reuses_ablated_outputs:
            live &= self._any_kept(run, in_cols, prev).unflatten(-1, (-1, source.size)).any(-2)
        return live

    def _ablated_output(self, run: _Run, index: int, rows: int, like: Tensor, units: int = 1) -> Tensor:
        """Source group ``index``'s ablated output ``[R, U, T, d]`` (zeros under zero ablation)."""
        ablated = run.ablated[index]
        if ablated is None:
            return like.new_zeros(rows, units, *like.shape[1:])
        return _tile_rows(ablated, rows).expand(rows, units, *like.shape[1:])

    def _any_kept_out(self, run: _Run, source: SourceGroup) -> Tensor:
        """Bool ``[C, U]``: does each circuit keep (part of) any outgoing edge of each source of the group?"""
        kept = (run.mask.edges[..., source.start : source.stop, :] != 0).any(-1)
        return kept if kept.dim() == 2 else kept.unsqueeze(0)

    def _any_kept(self, run: _Run, cols: list[int], prev: int) -> Tensor:
        """Bool ``[C, len(cols)]``: does each circuit keep (part of) any input edge of each destination?"""
        kept = (run.mask.edges[..., :prev, cols] != 0).any(-2)
        return kept if kept.dim() == 2 else kept.unsqueeze(0)

    def _group_inputs_identical(self, run: _Run, cols: list[int], prev: int) -> bool:
        """True when every query head of each K/V group reads the same (patched) input."""
        if not run.patched:
            return True
        edges = run.mask.edges[..., :prev, cols]
        grouped = edges.unflatten(-1, (self.adapter.n_kv_heads, self.adapter.group_size))
        return bool((grouped == grouped[..., :1]).all())

    # ------------------------------------------------------------------ logits
    def _logits(self, run: _Run, resid: Tensor, attention_mask: Tensor, logit_positions,
                on_receiver_grad: ReceiverGradHook | None) -> Tensor | None:
        if isinstance(logit_positions, str) and logit_positions == "none":
            return None
        col = [self.layout.logits_backward_index]
        positions: Tensor | None
        if isinstance(logit_positions, str) and logit_positions == "all":
            positions = None
        elif isinstance(logit_positions, str) and logit_positions == "last":
            positions = attention_mask.sum(-1) - 1
        elif isinstance(logit_positions, Tensor):
            positions = logit_positions.to(self.device)
            if run.n_circuits > 1 and positions.shape[0] * run.n_circuits == resid.shape[0]:
                positions = positions.repeat(run.n_circuits)
        else:
            raise ValueError(f"logit_positions must be 'all', 'last', 'none' or a tensor, got {logit_positions!r}")
        z = self._destination_inputs(run, col, self.layout.n_forward, resid, positions)
        z = _at_positions(resid, positions) if z is None else z[0]
        if positions is not None:
            z = z[:, 0]
        if on_receiver_grad is not None and z.requires_grad:
            z = z.clone()
            z.register_hook(lambda g: on_receiver_grad("logits", -1, g))
        return self.adapter.unembed(z)


# ====================================================================== math
def _tile_rows(x: Tensor, rows: int) -> Tensor:
    """Rows of a per-example tensor repeated for stacked circuits (circuit-major); 1 row broadcasts."""
    if x.shape[0] in (1, rows):
        return x.expand(rows, *x.shape[1:]) if x.shape[0] == 1 else x
    return x.repeat(rows // x.shape[0], *([1] * (x.dim() - 1)))


def _select_rows(x: Tensor, selected: Tensor | None, rows: int) -> Tensor:
    """``x`` at the ``selected`` rows when it has one per row (``rows``); a broadcast row is kept."""
    return x if selected is None or x.shape[0] != rows else x[selected]


def _at_positions(x: Tensor, positions: Tensor | None, dim: int = 1) -> Tensor:
    """``x`` at one position per row; the position axis ``dim`` is kept with length 1."""
    if positions is None:
        return x
    rows = torch.arange(positions.shape[0], device=x.device)
    if dim == 1:
        return x.expand(positions.shape[0], *x.shape[1:])[rows, positions].unsqueeze(1)
    return x[rows, :, positions].unsqueeze(2)


def _sum_heads(head_out: Tensor, bias: Tensor | None) -> Tensor:
    """Attention output ``sum_h a_h + b_O``: heads summed in at least float32 (as HF's output projection
    accumulates) and rounded once, identically for the run and for recorded ablated activations."""
    total = head_out.sum(1, dtype=torch.promote_types(head_out.dtype, torch.float32)).to(head_out.dtype)
    return total if bias is None else total + bias


def _add(a: Tensor | None, b: Tensor | None, *, like: Tensor) -> Tensor:
    """``a + b`` where either may be absent (zero ablation, no bias); zeros shaped like ``like`` if both are."""
    present = [x for x in (a, b) if x is not None]
    if not present:
        return torch.zeros_like(like)
    return present[0] if len(present) == 1 else present[0] + present[1]


def _project_head_major(normed: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Project head-major inputs ``[n, R, T, d]`` with per-head weights ``[n_w, dh, d]`` -> ``[R, n, T, dh]``.

    ``n`` equals ``n_w`` (one input per weight head) or is a multiple of it: one input per *query* head
    with grouped K/V weights, query head ``h`` using weight ``h // (n / n_w)``. Either way the inputs of
    one weight head are one contiguous block, so a single batched product reads them in place (other
    layouts are copied into it first).
    """
    n, rows, seq, width = normed.shape
    n_w = weight.shape[0]
    flat = normed.reshape(n_w, (n // n_w) * rows * seq, width)
    transposed = weight.transpose(1, 2)  # [n_w, d, dh], a view
    out = torch.bmm(flat, transposed) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, transposed)
    return out.view(n, rows, seq, -1).transpose(0, 1)


def _ungroup(x: Tensor, n_heads: int) -> Tensor:
    """Grouped K or V activations ``[R, Hkv, T, dh]`` as one row per query head ``[R, H, T, dh]``."""
    if x.shape[1] == n_heads:
        return x
    group = n_heads // x.shape[1]
    return x.unsqueeze(2).expand(-1, -1, group, -1, -1).flatten(1, 2)


def _project_shared(normed: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Project one shared input ``[R, T, d]`` with per-head weights -> ``[R, n, T, dh]``."""
    out = torch.einsum("btd,hkd->bhtk", normed, weight)
    return out if bias is None else out + bias[None, :, None, :]
