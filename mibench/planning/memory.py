"""Peak memory of each phase of a run, counted from the tensors the engine allocates.

Nothing here runs a model: every number is a closed-form count of the tensors that the code paths named
below keep alive at their peak, for a :class:`~mibench.planning.configs.ModelShape`, a dtype, a batch of
``B`` examples of ``T`` tokens and a method. Notation (all counts in elements, times the bytes of their
dtype): ``s`` bytes per model element, ``w = max(s, 4)`` the "wide" float32 the attribution accumulates in,
``L`` layers, ``H`` query heads, ``d`` width, ``dh`` head width, ``F`` MLP width, ``V`` vocabulary,
``U = 1 + L (H + 1)`` MIB's source nodes, and ``E(R) = R * T * d`` one residual stream over ``R`` rows.

Phases (what :func:`plan` returns, each as the memory beyond the weights plus the weights themselves):

* **load**: the weights, ``n_params * s`` (``model.to(dtype)``; nothing else is resident).
* **attribution** (gradient methods: EAP, EAP-IG-inputs/-activations, NAP, NAP-IG), per batch
  (:func:`mibench.circuits.attribution._accumulate`):

  - recorded sources ``[B, U, T, d]``: the counterfactual run (EAP: ``Ablation.patching``), or the clean
    and counterfactual runs stacked (IG: ``patching_with_clean_run``): ``U E(B) s`` once or twice; EAP's
    own clean run records ``U E(B) s`` more (``record=True`` on the gradient pass);
  - the deltas ``a~ - a`` per group (``BatchActivations.deltas``): ``U E(B) s``; at edge level also their
    source-major float32 copy (``source_major_deltas``): ``U E(B) w``, built while the first pass's graph is
    alive; below float32 each group is first widened, so ``U E(B) w`` more exists during the ``cat``;
  - the gradient pass runs ``k`` interpolation points stacked (``R = k B`` rows, ``k`` from
    ``_points_per_pass``: as many as keep ``U E(B) w`` per point under the engine's ``max_delta_bytes``).
    Its autograd graph keeps, per layer, what :func:`saved_per_token` lists (the q/k/v inputs' shared
    projection or, with grouped K/V, one normalised copy of the residual per query head for k and v; the
    attention scores; the MLP's activations);
  - the backward of the last layer adds its transient (:func:`backward_transient_per_token`): the
    per-head receiver gradients ``[3H, R, T, d]``, their float32 copy and the norm's batched VJP.

* **evaluation** (:func:`mibench.circuits.faithfulness.evaluate_circuits`), per batch: the clean and
  counterfactual runs stacked and recorded (``2 U E(B) s``), the ablation-delta buffer of ``C`` stacked
  circuits (``BufferDeltaStore``, ``U E(C B) s``, ``C`` chosen by ``PatchingEngine._circuits_per_forward``),
  and the largest layer's transient: q/k/v destination inputs ``[3H, C B, T, d]`` (twice while several
  circuits are concatenated), or after that their normalisation, the heads and the attention scores.
* **featurizer training** (causal track, :func:`mibench.causal.interventions.train_interchange`): the
  per-layer cache of base and source residuals (``LayerCache``: ``2 N T d s`` plus at most
  ``PREFIX_CACHE_BYTES`` of later residuals), the featurizer with its gradient and AdamW state
  (``16 d^2`` bytes for a full rotation), and one training step's autograd graph through every block after
  the site (the plain blocks' activations, counted as for attribution without the per-head copies).

The per-layer autograd counts equal the bytes autograd saves (``tests/test_planning.py``, all four families,
float32 and bfloat16). Whole phases were checked against measured peaks on CPU (``benchmarks/memory_plan.py``:
the embedded models and random-weight GPT-2-small and Qwen2.5-0.5B shapes): edge-level EAP, EAP-IG-inputs and
the scorer's evaluation within +-25 %; node/neuron levels and featurizer training are counted the same way but
not yet measured. The framework's constant overheads (Python, the
CUDA context) and the allocator's retention (see :mod:`mibench.planning.budget`) are not included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from mibench.planning.configs import ModelShape

#: ``PatchingEngine``'s default ``max_delta_bytes`` by device type (tests check these equal the engine's).
CPU_MAX_DELTA_BYTES = 256 * 2**20
ACCELERATOR_MAX_DELTA_BYTES = 8 * 2**30
#: ``mibench.causal.interventions.PREFIX_CACHE_BYTES``: later-layer residuals cached per site.
PREFIX_CACHE_BYTES = 1 << 30

#: How each gradient method takes its gradients (see mibench.circuits.attribution).
INTERPOLATION = {"eap": "none", "nap": "none", "eap-ig-inputs": "inputs", "nap-ig": "inputs",
                 "eap-ig-activations": "activations"}
#: Circuit methods that run no gradient pass: attribution costs at most one recorded forward.
FORWARD_ONLY = {"random", "ifr"}
#: Causal-track featurizers whose training is planned (a d x d rotation, a mask, or nothing to train).
FEATURIZERS = {"das", "dbm", "full-vector", "pca", "dbm-pca", "sae", "dbm-sae"}

DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2, "float64": 8}


@dataclass(frozen=True)
class PlanSettings:
    """What a run's memory depends on besides the model's shape."""

    batch_size: int
    seq_len: int
    method: str = "eap-ig-inputs"
    dtype_bytes: int = 4
    device_type: str = "cpu"
    level: str = "edge"
    ig_steps: int = 5
    baseline: bool = True
    #: causal track: training pairs held in the per-layer cache, and the featurizer's own batch size
    train_pairs: int = 400
    train_batch_size: int = 64

    @property
    def max_delta_bytes(self) -> int:
        return CPU_MAX_DELTA_BYTES if self.device_type == "cpu" else ACCELERATOR_MAX_DELTA_BYTES

    @property
    def causal(self) -> bool:
        return self.method in FEATURIZERS


@dataclass
class PhaseEstimate:
    """One phase's peak: the weights plus named working-memory terms (bytes)."""

    phase: str
    weights: int
    terms: dict[str, int] = field(default_factory=dict)

    @property
    def working(self) -> int:
        return sum(self.terms.values())

    @property
    def peak(self) -> int:
        return self.weights + self.working

    @property
    def largest_term(self) -> str:
        return max(self.terms, key=self.terms.get) if self.terms else "-"


def plan(shape: ModelShape, settings: PlanSettings) -> list[PhaseEstimate]:
    """Every phase of the run, in order."""
    check_method(settings.method)
    weights = shape.n_params * settings.dtype_bytes
    phases = [PhaseEstimate("load", weights)]
    if settings.causal:
        phases.append(PhaseEstimate("featurizer training", weights, featurizer_training_terms(shape, settings)))
        return phases
    phases.append(PhaseEstimate("attribution", weights, attribution_terms(shape, settings)))
    phases.append(PhaseEstimate("evaluation", weights, evaluation_terms(shape, settings)))
    return phases


def check_method(method: str) -> None:
    known = set(INTERPOLATION) | FORWARD_ONLY | FEATURIZERS
    if method not in known:
        from mibench.planning.configs import PlanningError

        raise PlanningError(f"no memory model for method {method!r}; planned methods: {', '.join(sorted(known))}")


def fits(phases: list[PhaseEstimate], budget: int, device_type: str) -> bool:
    """Whether every phase fits ``budget`` with the allocator's headroom on its working memory
    (:mod:`mibench.planning.budget`)."""
    from mibench.planning.budget import headroom

    factor = headroom(device_type)
    return all(p.weights + factor * p.working <= budget for p in phases)


def largest_batch(shape: ModelShape, settings: PlanSettings, budget: int, *, upper: int = 4096) -> int:
    """The largest batch size up to ``upper`` that :func:`fits` ``budget`` bytes (0 when none does).

    Every size is checked: peaks are not monotone in the batch, because the interpolation points stacked per
    pass (and the circuits per evaluation forward) shrink as the batch grows."""
    from dataclasses import replace

    for batch in range(upper, 0, -1):
        if fits(plan(shape, replace(settings, batch_size=batch)), budget, settings.device_type):
            return batch
    return 0


# ====================================================================== per-token counts
# Attribution and featurizer training run with the model's parameters frozen, so autograd keeps an
# activation only where it is needed for the gradient of *another activation*: a Linear / einsum with a
# frozen weight keeps nothing but the weight, ``x * cos`` keeps ``cos``; the product of two activations
# (q k^T, pattern v, act(gate) * up) keeps both, softmax and tanh keep their output, SiLU / native GELU /
# LayerNorm keep their input, and a Python RMSNorm keeps its float32 copy of the input.
def norm_saved_bytes(shape: ModelShape, s: int) -> int:
    """Bytes a norm keeps for backward per element with frozen weights: LayerNorm its input (``s``; mean
    and rstd are per row), RMSNorm (Llama, Qwen2, Gemma-2) the float32 copy it normalises (``4``; for a
    float32 model that is the input itself)."""
    return 4 if shape.rms_norm else s


def saved_per_token(shape: ModelShape, s: int, seq: int, *, per_head_copies: bool) -> int:
    """Bytes the autograd graph keeps per layer, per row and token (frozen weights; see above).

    * q/k/v inputs: ``SharedInputProjection`` keeps the residual (``d s``). With grouped K/V and
      ``per_head_copies`` (the engine's receiver-gradient path, ``PatchingEngine._attention``) k and v each
      read ``resid.expand(H).clone()`` through the norm, which keeps ``H`` float32 copies per kind
      (``2 H d * 4``).
    * attention: q, k, v (after RoPE) kept by the two matmuls (``(H + 2 n_kv) dh s``, or ``3 H dh s`` when
      k/v are per query head), the softmax output in float32 and its cast (``H T (4 + s)``, one copy in
      float32), Gemma-2's soft-capping tanh output (``H T s``).
    * Gemma-2's post-attention and post-feedforward norms (``2 d * 4``).
    * MLP: the input's clone kept by its norm, then the activation: GPT-2 ``F s`` (the adapter's native
      tanh GELU, ``gelu_new`` included) or ``4 F s`` (a Python activation module); gated MLPs ``3 F s``
      (the activation's input, its output and ``up``).

    Featurizer training runs the model's own blocks (``per_head_copies=False``), whose K/V are grouped.
    """
    d, h, dh, f, kv = shape.d_model, shape.n_heads, shape.d_head, shape.d_mlp, shape.n_kv_heads
    norm = norm_saved_bytes(shape, s)
    total = d * s  # the residual the q/k/v projections read
    if per_head_copies and shape.group_size > 1:
        total += 2 * h * d * norm + 3 * h * dh * s
    else:
        total += (h + 2 * kv) * dh * s
    total += h * seq * ((4 + s) if s < 4 else 4)
    if shape.family == "gemma2":
        total += h * seq * s + 2 * d * norm
    total += d * norm  # the MLP's pre-norm input
    if shape.gated_mlp:
        total += 3 * f * s
    else:
        total += (1 if shape.native_activation else 4) * f * s
    return total


def backward_transient_per_token(shape: ModelShape, s: int, points: int) -> int:
    """Bytes per example and token that the last layer's backward adds on top of the graph (attribution).

    ``SharedInputProjection.backward`` builds the cotangents of its heads and their per-head input
    gradients (``[n H, R, T, d]`` each, ``n = 3`` without grouped K/V, else 1 for q), ``R = points x B``.
    With grouped K/V, k and v's per-head gradients (``[H, R, T, d]``) come from the norm's backward in
    float32. ``EdgeGradientContraction`` then holds the three kinds' gradients summed over the points
    (``_fold_points``, float32), concatenates them and widens them (``[3H, B, T, d]``).
    """
    d, h = shape.d_model, shape.n_heads
    w = max(s, 4)
    shared = 3 * h if shape.group_size == 1 else h
    total = points * shared * d * 2 * s
    if shape.group_size > 1:
        total += points * 2 * h * d * (4 + s)
    contraction = 3 * h * d * (s + (w if points > 1 else 0) + (4 if s < 4 else 0))
    return total + contraction


# ====================================================================== phases
def attribution_terms(shape: ModelShape, settings: PlanSettings) -> dict[str, int]:
    s, b, t, d = settings.dtype_bytes, settings.batch_size, settings.seq_len, shape.d_model
    u, w = shape.n_forward, max(settings.dtype_bytes, 4)
    stream = b * t * d  # E(B)
    if settings.method in FORWARD_ONLY:
        return {"recorded sources (one forward)": u * stream * s}
    interpolation = INTERPOLATION[settings.method]
    points = 1 if interpolation == "none" else points_per_pass(shape, settings)
    rows = points * b
    terms = {}
    if interpolation == "none":
        terms["recorded sources (counterfactual + clean)"] = 2 * u * stream * s
    else:
        terms["recorded sources (clean + counterfactual stacked)"] = 2 * u * stream * s
    terms["deltas a~ - a"] = u * stream * s
    if settings.level == "edge":
        terms["source-major float32 deltas"] = u * stream * w
    edges = settings.level == "edge"  # node/neuron scores read source gradients: no receiver-gradient path
    saved = shape.n_layers * rows * t * saved_per_token(shape, s, t, per_head_copies=edges)
    terms[f"autograd graph ({points} point(s) x {b} rows)"] = saved
    terms["logits at the answer position"] = rows * shape.vocab_size * (s + 4)
    widen = u * stream * w if (settings.level == "edge" and s < 4) else 0
    backward = b * t * (backward_transient_per_token(shape, s, points) if edges else points * 2 * d * w)
    terms["largest transient (widening the deltas | one layer's backward)"] = max(widen, backward)
    return terms


def points_per_pass(shape: ModelShape, settings: PlanSettings) -> int:
    """Interpolation points stacked in one gradient pass (``attribution._points_per_pass``)."""
    per_point = shape.n_forward * settings.batch_size * settings.seq_len * shape.d_model * max(settings.dtype_bytes, 4)
    return max(1, min(settings.ig_steps, settings.max_delta_bytes // max(per_point, 1)))


def stacked_circuits(shape: ModelShape, settings: PlanSettings) -> int:
    """Circuits the scorer stacks (``evaluate_circuits``): per ranking (signed, absolute, and the random
    baseline's), one per distinct size ``0 < n_k < N`` of MIB's ten; empty and complete circuits are
    shortcuts computed by the clean and counterfactual runs."""
    from mibench.circuits.selection import circuit_sizes

    n_items = edge_count(shape)
    sizes = {n for n in circuit_sizes(n_items) if 0 < n < n_items}
    return len(sizes) * (3 if settings.baseline else 2)


@functools.lru_cache(maxsize=64)
def edge_count(shape: ModelShape) -> int:
    """MIB's edge count of the shape's graph."""
    from mibench.graph.layout import GraphLayout

    return GraphLayout(n_layers=shape.n_layers, n_heads=shape.n_heads, d_model=shape.d_model).n_edges


def circuits_per_forward(shape: ModelShape, settings: PlanSettings) -> int:
    """Stacked circuits per evaluation forward (``PatchingEngine._circuits_per_forward``)."""
    per_circuit = shape.n_forward * settings.batch_size * settings.seq_len * shape.d_model * settings.dtype_bytes
    return max(1, min(stacked_circuits(shape, settings), settings.max_delta_bytes // max(per_circuit, 1)))


def evaluation_terms(shape: ModelShape, settings: PlanSettings) -> dict[str, int]:
    """The scorer's peak on one batch: the recorded runs, then a full chunk of ``C`` stacked circuits
    (``PatchingEngine._circuits_per_forward``): its ablation-delta buffer, its residual streams and its largest
    layer transient (:func:`layer_transient`). The last, smaller chunk needs less: its buffer replaces the full
    chunks' one (measured: peaks are unchanged by a remainder chunk).

    Measured on CPU (``benchmarks/memory_plan.py``) with random scores, whose circuits spread over the most
    heads, the estimate is within 0.78-1.05 of the peak; circuits that leave whole heads out run the cheaper
    ``_attention_of_heads`` path and come in lower."""
    s, b, t, d = settings.dtype_bytes, settings.batch_size, settings.seq_len, shape.d_model
    u = shape.n_forward
    circuits = circuits_per_forward(shape, settings)
    return {
        "recorded sources (clean + counterfactual stacked)": 2 * u * b * t * d * s,
        "logits at the answer position": 2 * b * shape.vocab_size * (s + 4),
        f"ablation-delta buffer ({circuits} circuit(s) x {b} rows)": u * circuits * b * t * d * s,
        f"residual streams (run, ablated, tiled; {circuits} circuit(s))": 3 * circuits * b * t * d * s,
        "largest layer transient": layer_transient(shape, settings, circuits),
    }


def layer_transient(shape: ModelShape, settings: PlanSettings, circuits: int) -> int:
    """The largest transient of one attention layer of a forward stacking ``circuits`` circuits (``R = C B``
    rows), where every circuit computes every head (``PatchingEngine._attention``'s general path), beyond
    what the forward keeps throughout. The larger of two moments:

    * building the q/k/v destination inputs ``I = [3H, R, T, d]``: per circuit, then concatenated, so both
      exist during the ``cat`` when ``C > 1`` (``2 I``);
    * after it: ``I``, one kind's normalisation (LayerNorm: its output; RMSNorm: two float32 temporaries and
      the cast), the per-head q/k/v and outputs, and the attention scores.

    Either way the previous layer's per-head outputs ``[R, H, T, d]`` are still referenced by the forward
    loop (measured), so they count too."""
    s, t, d, h = settings.dtype_bytes, settings.seq_len, shape.d_model, shape.n_heads
    rows = circuits * settings.batch_size
    inputs = 3 * h * rows * t * d * s
    building = (2 if circuits > 1 else 1) * inputs
    normed = h * rows * t * d * ((8 + s) if shape.rms_norm else s)
    heads = rows * t * h * (3 * shape.d_head + d) * s
    scores = rows * h * t * t * (2 * s + 4)
    previous_layer = rows * h * t * d * s
    return max(building, inputs + normed + heads + scores) + previous_layer


def featurizer_training_terms(shape: ModelShape, settings: PlanSettings) -> dict[str, int]:
    s, t, d, n = settings.dtype_bytes, settings.seq_len, shape.d_model, settings.train_pairs
    rows = settings.train_batch_size
    per_layer = n * t * d * s
    # LayerCache keeps the residuals after every later block only when they all fit PREFIX_CACHE_BYTES: the
    # most it holds is at the lowest layer whose later blocks fit.
    later = min(shape.n_layers - 1, PREFIX_CACHE_BYTES // max(per_layer, 1)) * per_layer
    terms = {
        "base and source residual cache": 2 * n * t * d * s,
        "later-layer residual cache": later,
        "autograd graph of the blocks after the site": shape.n_layers * rows * t * saved_per_token(
            shape, s, t, per_head_copies=False),
        "logits of the label tokens": rows * shape.vocab_size * (s + 4 + 4),
    }
    if settings.method in ("das",):
        terms["rotation, its gradient and AdamW state"] = 4 * d * d * 4
    elif settings.method.startswith("dbm"):
        terms["mask, its gradient and AdamW state"] = 4 * d * 4
    return terms
