"""Save -> load -> same outputs: the check that a featurizer keeps all of its state in what gets saved.

A featurizer class that keeps fitted or trained state in a plain attribute (not a parameter or buffer) is
saved without it, and scoring the saved copy silently gives another number than the run that trained it.
:func:`round_trip_difference` saves an intervention into a temporary folder, loads it back through the same
code ``mibench score --track causal`` uses (in memory: the same JSON text and safetensors bytes a folder
would hold), and compares both on seeded random inputs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mibench.causal.featurizer import Interchange

#: Outputs may differ by float rounding only.
TOLERANCE = 1e-5


@torch.no_grad()
def round_trip_difference(interchange: Interchange, *, layer: int = 0, role: str = "site",
                          n_inputs: int = 8, seed: int = 0) -> str | None:
    """None if the saved and reloaded copy computes what ``interchange`` computes; else what differs."""
    from safetensors.torch import load, save

    from mibench.causal.storage import interchange_payload, parse_card, rebuild_interchange

    generator = torch.Generator().manual_seed(seed)
    d_model = interchange.featurizer.d_model
    base = torch.randn(n_inputs, d_model, generator=generator)
    source = torch.randn(n_inputs, d_model, generator=generator)
    interchange = interchange.eval()
    expected = interchange(base, source)
    text, tensors = interchange_payload(interchange, layer=layer, role=role)
    where = Path(f"L{layer}_{role}.json")
    again = rebuild_interchange(parse_card(where, text.encode("utf-8")), load(save(tensors)),
                                where.with_suffix(".safetensors"))
    got = again(base, source)
    selected = torch.equal(again.selection.selected(), interchange.selection.selected())
    if got.shape != expected.shape or not selected:
        return "saved and reloaded, it selects other features: part of its state is not saved"
    gap = float((got - expected).abs().max()) if got.numel() else 0.0
    if not gap <= TOLERANCE * max(1.0, float(expected.abs().max())):
        name = interchange.featurizer.registry_name
        return (f"saved and reloaded, {name!r} computes something else (max difference {gap:.3g}): state kept "
                "outside its parameters and buffers is lost when it is saved; register it as a buffer")
    return None
