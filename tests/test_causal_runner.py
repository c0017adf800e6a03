"""The causal track's block-by-block runner against plain HF forwards and pyvene (independent oracles)."""

from __future__ import annotations

import pytest
import torch

from mibench.engine.residual import ResidualRunner
from mibench.models.adapter import adapter_for
from mibench.models.tiny import TINY_FAMILIES, tiny_model

B, T = 3, 9


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 100, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # right padding on one row
    return ids, mask


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_residuals_and_logits_match_hf(family):
    model = tiny_model(family)
    runner = ResidualRunner(adapter_for(model))
    ids, mask = _inputs()
    with torch.no_grad():
        hf = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        resid = runner.residuals(ids, mask)
        logits = runner.forward(ids, mask)
    real = mask.bool()
    for layer in range(runner.n_layers - 1):  # HF's last hidden state is after the final norm
        assert torch.allclose(resid[layer][real], hf.hidden_states[layer + 1][real], atol=1e-5), layer
    assert (logits[real] - hf.logits[real]).abs().max() <= 1e-5


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_run_from_any_layer_equals_full_forward(family):
    model = tiny_model(family)
    runner = ResidualRunner(adapter_for(model))
    ids, mask = _inputs(1)
    read = torch.tensor([[8], [6], [8]])
    with torch.no_grad():
        full = runner.forward(ids, mask, read_positions=read)
        resid = runner.residuals(ids, mask)
        for layer in range(runner.n_layers):
            tail = runner.run_from(layer, resid[layer], mask, read_positions=read)
            assert torch.allclose(tail, full, atol=1e-5), layer


def test_residuals_stop_at_the_deepest_requested_block():
    model = tiny_model("gpt2", n_layers=3)
    runner = ResidualRunner(adapter_for(model))
    calls = []
    block = model.transformer.h[2].mlp
    handle = block.register_forward_hook(lambda *a: calls.append(1))
    try:
        runner.residuals(*_inputs(), layers=[0, 1])
    finally:
        handle.remove()
    assert not calls


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_interchange_matches_pyvene_vanilla_intervention(family):
    """Swap block ``L``'s output at source position 2 into base position 5; pyvene is the oracle."""
    pv = pytest.importorskip("pyvene")
    model = tiny_model(family)
    runner = ResidualRunner(adapter_for(model))
    base, _ = _inputs(2)
    source, _ = _inputs(3)
    layer, src_pos, base_pos = 1, 2, 5
    with torch.no_grad():
        src = runner.residuals(source, layers=[layer])[layer][:, src_pos]
        resid = runner.residuals(base, layers=[layer])[layer].clone()
        resid[:, base_pos] = src
        ours = runner.run_from(layer, resid)

        config = pv.IntervenableConfig([{"layer": layer, "component": "block_output", "unit": "pos",
                                         "intervention_type": pv.VanillaIntervention}])
        intervenable = pv.IntervenableModel(config, model)
        _, out = intervenable({"input_ids": base}, [{"input_ids": source}],
                              unit_locations={"sources->base": ([[[src_pos]] * B], [[[base_pos]] * B])})
    assert (ours - out.logits).abs().max() <= 1e-5


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_head_edit_matches_a_hook_on_the_output_projection(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    runner = ResidualRunner(adapter)
    ids, mask = _inputs(4)
    layer, head = 1, 2
    proj = model.transformer.h[layer].attn.c_proj if family == "gpt2" else model.model.layers[layer].self_attn.o_proj

    def zero_head(module, args):
        x = args[0].clone()
        x[..., head * adapter.d_head:(head + 1) * adapter.d_head] = 0
        return (x,)

    def edit(at: int, z: torch.Tensor) -> torch.Tensor:
        if at == layer:
            z = z.clone()
            z[:, head] = 0
        return z

    with torch.no_grad():
        handle = proj.register_forward_pre_hook(zero_head)
        try:
            expected = model(input_ids=ids, attention_mask=mask).logits
        finally:
            handle.remove()
        ours = runner.forward(ids, mask, head_edit=edit)
    real = mask.bool()
    assert (ours[real] - expected[real]).abs().max() <= 1e-5


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_suffix_mode_equals_a_full_tail_run(family):
    """Editing positions >= start and computing only those positions gives the same logits."""
    model = tiny_model(family, n_layers=3)
    runner = ResidualRunner(adapter_for(model))
    ids, mask = _inputs(5)
    read = torch.tensor([[6], [6], [8]])
    with torch.no_grad():
        resid = runner.residuals(ids, mask)
        for layer in range(runner.n_layers):
            edited = resid[layer].clone()
            edited[:, 5] += torch.randn_like(edited[:, 5])
            expected = runner.run_from(layer, edited, mask, read_positions=read)
            prefix = [resid[i] for i in range(layer, runner.n_layers - 1)]
            for start in (1, 3, 5):
                ours = runner.run_from(layer, edited, mask, read_positions=read, prefix=prefix, start=start)
                assert torch.allclose(ours, expected, atol=1e-5), (layer, start)
