"""Independent oracles built from plain Hugging Face forwards with PyTorch hooks.

Nothing here uses mibench's engine: node outputs are read and replaced on the HF modules themselves, and
an edge ablation is reproduced by adding ``a~_u - a_u`` at exactly one destination's input. The engine
must agree with these to float32 rounding.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn


def _modules(model: nn.Module) -> dict:
    """Where each piece lives, per family (kept deliberately separate from mibench's adapters)."""
    kind = model.config.model_type
    if kind == "gpt2":
        blocks = model.transformer.h
        return {
            "embed": model.transformer.wte,
            "out_proj": [b.attn.c_proj for b in blocks],
            "mlp_out": [b.mlp for b in blocks],
            "pre_attn_norm": [b.ln_1 for b in blocks],
            "pre_mlp_norm": [b.ln_2 for b in blocks],
            "final_norm": model.transformer.ln_f,
            "qkv_proj": [b.attn.c_attn for b in blocks],
        }
    layers = model.model.layers
    mods = {
        "embed": model.model.embed_tokens,
        "out_proj": [l.self_attn.o_proj for l in layers],
        "pre_attn_norm": [l.input_layernorm for l in layers],
        "final_norm": model.model.norm,
        "q_proj": [l.self_attn.q_proj for l in layers],
        "k_proj": [l.self_attn.k_proj for l in layers],
        "v_proj": [l.self_attn.v_proj for l in layers],
    }
    if kind == "gemma2":
        mods["mlp_out"] = [l.post_feedforward_layernorm for l in layers]
        mods["pre_mlp_norm"] = [l.pre_feedforward_layernorm for l in layers]
    else:
        mods["mlp_out"] = [l.mlp for l in layers]
        mods["pre_mlp_norm"] = [l.post_attention_layernorm for l in layers]
    return mods


def _head_outputs(model: nn.Module, layer: int, z_flat: Tensor) -> Tensor:
    """Per-head results ``[B, T, H, d]`` from the output projection's input, using HF weight slices."""
    mods = _modules(model)
    n_heads = model.config.num_attention_heads if hasattr(model.config, "num_attention_heads") else model.config.n_head
    z = z_flat.unflatten(-1, (n_heads, -1))
    weight = mods["out_proj"][layer].weight
    if model.config.model_type == "gpt2":  # Conv1D: [H*dh, d]
        return torch.einsum("bthk,hkd->bthd", z, weight.unflatten(0, (n_heads, -1)))
    return torch.einsum("bthk,dhk->bthd", z, weight.unflatten(1, (n_heads, -1)))


@contextmanager
def _hooks(handles):
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def capture_nodes(model: nn.Module, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, dict]:
    """Logits and every MIB node's output (``input``, ``a{l}.h{h}``, ``m{l}``) from one HF forward."""
    mods = _modules(model)
    store: dict[str, Tensor] = {}
    handles = [mods["embed"].register_forward_hook(lambda m, i, o: store.__setitem__("input", o))]
    for layer, proj in enumerate(mods["out_proj"]):
        def grab_heads(m, inputs, output, layer=layer):
            store[f"attn_out{layer}"] = output
            heads = _head_outputs(model, layer, inputs[0])
            for h in range(heads.shape[2]):
                store[f"a{layer}.h{h}"] = heads[:, :, h]
        handles.append(proj.register_forward_hook(grab_heads))
    for layer, mlp in enumerate(mods["mlp_out"]):
        handles.append(mlp.register_forward_hook(lambda m, i, o, layer=layer: store.__setitem__(f"m{layer}", o)))
    with _hooks(handles), torch.no_grad():
        logits = model(input_ids, attention_mask=attention_mask).logits
    return logits, store


def edge_shift(model: nn.Module, clean_nodes: dict, cf_nodes: dict, source: str) -> Tensor:
    """What ablating the single edge ``source -> v`` adds to ``v``'s input (``[B, T, d]``).

    Additive models: ``a~_u - a_u``. Gemma-2 heads sit inside the post-attention RMSNorm, so the
    destination sees ``post(s + a~_h - a_h) - post(s)`` with ``s`` the layer's clean o_proj output.
    """
    delta = cf_nodes[source] - clean_nodes[source]
    if model.config.model_type != "gemma2" or not source.startswith("a"):
        return delta
    layer = int(source[1:].split(".")[0])
    post = model.model.layers[layer].post_attention_layernorm
    attn_out = clean_nodes[f"attn_out{layer}"]
    with torch.no_grad():
        return post(attn_out + delta) - post(attn_out)


def forward_with_node_values(model: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                             values: dict[str, Tensor], *, grad: bool = False) -> Tensor:
    """HF logits when the named nodes output ``values[name]`` (``[B, T, d]``) instead of their own output.

    This is MIB's node-level ablation: every outgoing edge of a replaced node carries the replacement.
    With ``grad`` the forward is differentiable (parameter gradients of a model trained under ablation).
    """
    mods = _modules(model)
    handles = []
    if "input" in values:
        handles.append(mods["embed"].register_forward_hook(lambda m, i, o: values["input"]))
    for layer, proj in enumerate(mods["out_proj"]):
        def replace_heads(m, inputs, output, layer=layer):
            heads = _head_outputs(model, layer, inputs[0])
            names = [f"a{layer}.h{h}" for h in range(heads.shape[2])]
            if all(n in values for n in names):  # build it directly: no cancellation noise
                total = sum(values[n] for n in names)
                return total if m.bias is None else total + m.bias
            for h, name in enumerate(names):
                if name in values:
                    output = output + values[name] - heads[:, :, h]
            return output
        handles.append(proj.register_forward_hook(replace_heads))
    for layer, mlp in enumerate(mods["mlp_out"]):
        if f"m{layer}" in values:
            handles.append(mlp.register_forward_hook(lambda m, i, o, layer=layer: values[f"m{layer}"]))
    with _hooks(handles), (nullcontext() if grad else torch.no_grad()):
        return model(input_ids, attention_mask=attention_mask).logits


def forward_with_edge_delta(model: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                            destination: tuple, delta: Tensor) -> Tensor:
    """HF logits when exactly one destination input receives an extra ``delta`` (``[B, T, d]``).

    ``destination`` is ``("mlp", layer)``, ``("logits",)`` or ``(qkv, layer, head)`` with qkv in q/k/v.
    For a single ablated edge ``u -> v`` the delta is ``a~_u - a_u`` of the clean run, because nothing
    upstream of ``v`` changes. For q/k/v the head's projection is recomputed from the shifted residual
    and spliced into that head's slice only (k/v need one K/V head per query head, i.e. no GQA).
    """
    mods = _modules(model)
    kind = destination[0]
    handles = []
    if kind == "mlp":
        handles.append(mods["pre_mlp_norm"][destination[1]].register_forward_pre_hook(
            lambda m, args: (args[0] + delta,) + tuple(args[1:])))
    elif kind == "logits":
        handles.append(mods["final_norm"].register_forward_pre_hook(
            lambda m, args: (args[0] + delta,) + tuple(args[1:])))
    else:
        _, layer, head = destination
        norm = mods["pre_attn_norm"][layer]
        resid: dict[str, Tensor] = {}
        handles.append(norm.register_forward_pre_hook(lambda m, args: resid.__setitem__("r", args[0])))
        if model.config.model_type == "gpt2":
            d = model.config.n_embd
            d_head = d // model.config.n_head
            offset = {"q": 0, "k": d, "v": 2 * d}[kind] + head * d_head
            proj = mods["qkv_proj"][layer]
        else:
            d_head = mods["q_proj"][layer].weight.shape[0] // model.config.num_attention_heads
            offset = head * d_head
            proj = mods[f"{kind}_proj"][layer]
            if kind != "q" and proj.weight.shape[0] != mods["q_proj"][layer].weight.shape[0]:
                raise ValueError("single k/v edge oracles need one K/V head per query head")

        def splice_head(m, inputs, output):
            shifted = norm(resid["r"] + delta)
            if model.config.model_type == "gpt2":  # Conv1D: x @ W + b
                recomputed = shifted @ m.weight + m.bias
            else:
                recomputed = nn.functional.linear(shifted, m.weight, m.bias)
            output = output.clone()
            output[..., offset : offset + d_head] = recomputed[..., offset : offset + d_head]
            return output

        handles.append(proj.register_forward_hook(splice_head))
    with _hooks(handles), torch.no_grad():
        return model(input_ids, attention_mask=attention_mask).logits
