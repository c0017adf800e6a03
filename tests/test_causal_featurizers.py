"""Featurizers and interchange interventions against independent oracles.

* the identity interchange equals plain activation patching done with HF forward hooks;
* DAS with full rank equals full-vector patching, and DAS at low rank equals pyvene's
  ``LowRankRotatedSpaceIntervention`` with the same basis;
* PCA and SAE featurize -> inverse round trips are exact (the SAE's error term is added back);
* saved interventions reload to the same outputs, and malformed files name the file and the field.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from mibench.causal.featurizer import (
    AllFeatures,
    FixedFeatures,
    IdentityFeaturizer,
    Interchange,
    LearnedMask,
    PCAFeaturizer,
    SubspaceFeaturizer,
)
from mibench.causal.interventions import LayerCache, TrainingSettings, intervened_logits, train_interchange
from mibench.causal.pairs import PairSet, Sequences
from mibench.causal.sae import SAEFeaturizer
from mibench.causal.storage import FeaturizerFileError, load_interchange, save_interchange
from mibench.engine.residual import ResidualRunner
from mibench.models.adapter import adapter_for
from mibench.models.tiny import TINY_FAMILIES, tiny_model

B, T, V = 4, 10, 101


# --------------------------------------------------------------------------------------------- helpers
def _pairs(seed: int = 0, *, answer_ids: torch.Tensor | None = None) -> PairSet:
    """Random base/source sequences (one answer slot read at the last token), roles at varying positions."""
    g = torch.Generator().manual_seed(seed)
    base_ids, source_ids = torch.randint(1, V, (B, T), generator=g), torch.randint(1, V, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    read = torch.full((B, 1), T - 1)
    answers = answer_ids if answer_ids is not None else torch.randint(1, V, (B, 1), generator=g)
    base = Sequences(base_ids, mask, read, answers, torch.ones(B, 1, dtype=torch.bool))
    source = Sequences(source_ids, mask.clone(), read.clone(), answers.clone(), torch.ones(B, 1, dtype=torch.bool))
    base_positions = {"x": torch.tensor([3, 5, 7, 2]), "last": torch.full((B,), T - 1)}
    source_positions = {"x": torch.tensor([6, 1, 7, 4]), "last": torch.full((B,), T - 1)}
    return PairSet("random", base, source, base_positions, source_positions, [f"e{i}" for i in range(B)],
                   ["?"] * B, Counter())


def _block(model, layer: int):
    return model.transformer.h[layer] if hasattr(model, "transformer") else model.model.layers[layer]


def _hf_patched_logits(model, pairs: PairSet, layer: int, role: str) -> torch.Tensor:
    """Activation patching with plain HF forward hooks: record block ``layer``'s output on the source at the
    source's role position, write it into the base run at the base's role position."""
    block = _block(model, layer)
    rows = torch.arange(B)
    recorded = {}

    def output_of(out):
        return out[0] if isinstance(out, tuple) else out

    def record(module, args, out):
        recorded["x"] = output_of(out)[rows, pairs.source_positions[role]].clone()

    def patch(module, args, out):
        hidden = output_of(out).clone()
        hidden[rows, pairs.base_positions[role]] = recorded["x"]
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    with torch.no_grad():
        handle = block.register_forward_hook(record)
        try:
            model(input_ids=pairs.source.ids, attention_mask=pairs.source.mask)
        finally:
            handle.remove()
        handle = block.register_forward_hook(patch)
        try:
            logits = model(input_ids=pairs.base.ids, attention_mask=pairs.base.mask).logits
        finally:
            handle.remove()
    return logits[rows, T - 1]


def _ours(runner, interchange, pairs, layer, role, **cache_kwargs) -> torch.Tensor:
    site = LayerCache(runner, pairs, layer, **cache_kwargs).site(role)
    with torch.no_grad():
        return intervened_logits(runner, interchange, site, torch.arange(B), training=False)[:, 0]


# ------------------------------------------------------------------------------------ interchange oracles
@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("role", ["x", "last"])
def test_identity_interchange_is_activation_patching(family, layer, role):
    model = tiny_model(family, n_layers=3)  # a later block reads the patched position, so the patch matters
    runner = ResidualRunner(adapter_for(model))
    pairs = _pairs(layer)
    expected = _hf_patched_logits(model, pairs, layer, role)
    full = _ours(runner, Interchange(IdentityFeaturizer(runner.d_model)), pairs, layer, role)
    assert (full - expected).abs().max() <= 1e-5
    # suffix-mode off (no cached later residuals): the same numbers from full tail runs
    plain = _ours(runner, Interchange(IdentityFeaturizer(runner.d_model)), pairs, layer, role, prefix_budget=0)
    assert (plain - expected).abs().max() <= 1e-5
    # and the intervention matters: the unpatched base logits differ
    with torch.no_grad():
        clean = model(input_ids=pairs.base.ids).logits[:, T - 1]
    assert (clean - expected).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_full_rank_das_equals_full_vector_patching(family):
    model = tiny_model(family)
    runner = ResidualRunner(adapter_for(model))
    pairs = _pairs(3)
    torch.manual_seed(1)
    das = Interchange(SubspaceFeaturizer(runner.d_model, runner.d_model))
    full = Interchange(IdentityFeaturizer(runner.d_model))
    assert (_ours(runner, das, pairs, 0, "x") - _ours(runner, full, pairs, 0, "x")).abs().max() <= 1e-4


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_low_rank_das_equals_pyvene(family):
    pv = pytest.importorskip("pyvene")
    model = tiny_model(family)
    runner = ResidualRunner(adapter_for(model))
    pairs = _pairs(4)
    layer, role, k = 1, "x", 8
    torch.manual_seed(2)
    das = SubspaceFeaturizer(runner.d_model, k)
    ours = _ours(runner, Interchange(das), pairs, layer, role)

    config = pv.IntervenableConfig([{"layer": layer, "component": "block_output", "unit": "pos",
                                     "intervention_type": pv.LowRankRotatedSpaceIntervention,
                                     "low_rank_dimension": k}])
    intervenable = pv.IntervenableModel(config, model)
    (intervention,) = intervenable.interventions.values()
    with torch.no_grad():
        intervention.rotate_layer.weight = das.basis.detach().clone()
        assert torch.allclose(intervention.rotate_layer.weight, das.basis, atol=1e-6)
        locations = {"sources->base": ([[[int(p)] for p in pairs.source_positions[role]]],
                                       [[[int(p)] for p in pairs.base_positions[role]]])}
        _, out = intervenable({"input_ids": pairs.base.ids}, [{"input_ids": pairs.source.ids}],
                              unit_locations=locations)
    assert (ours - out.logits[:, T - 1]).abs().max() <= 1e-5


def test_subspace_interchange_formula_and_orthonormality():
    torch.manual_seed(0)
    das = SubspaceFeaturizer(32, 5)
    w = das.basis.detach()
    assert torch.allclose(w.T @ w, torch.eye(5), atol=1e-5)
    base, source = torch.randn(7, 32), torch.randn(7, 32)
    out = Interchange(das)(base, source)
    assert torch.allclose(out, base + (source - base) @ w @ w.T, atol=1e-5)
    f, e = das.featurize(base)
    assert torch.allclose(das.inverse(f, e), base, atol=1e-5)


def test_fixed_and_masked_selections_swap_only_their_features():
    torch.manual_seed(0)
    base, source = torch.randn(5, 16), torch.randn(5, 16)
    picked = Interchange(IdentityFeaturizer(16), FixedFeatures(16, [1, 4, 9]))(base, source)
    expected = base.clone()
    expected[:, [1, 4, 9]] = source[:, [1, 4, 9]]
    assert torch.allclose(picked, expected, atol=1e-6, rtol=0)
    mask = LearnedMask(16)
    with torch.no_grad():
        mask.logits[[0, 3]] = 2.0
        mask.logits[[5]] = -1.0
    hard = Interchange(IdentityFeaturizer(16), mask)(base, source)
    expected = base.clone()
    expected[:, [0, 3]] = source[:, [0, 3]]
    assert torch.allclose(hard, expected, atol=1e-6, rtol=0)
    assert mask.selected().tolist() == [0, 3]


def test_learned_mask_anneals_and_its_sparsity_term_prunes():
    mask = LearnedMask(8, sparsity=1.0, temperature_start=1.0, temperature_end=0.01)
    mask.step(0.0)
    assert mask.temperature == 1.0 and torch.allclose(mask.weights(training=True), torch.full((8,), 0.5))
    mask.step(0.5)
    assert mask.temperature == pytest.approx(0.505)
    mask.step(1.0)
    assert mask.temperature == pytest.approx(0.01)
    mask.step(0.0)
    penalty = mask.penalty()
    penalty.backward()
    assert (mask.logits.grad > 0).all()  # gradient descent lowers every gate: the term prunes
    assert LearnedMask(8, sparsity=0.0).penalty() is None


# ----------------------------------------------------------------------------------- PCA and SAE
def test_pca_is_centred_fit_on_given_data_and_round_trips():
    torch.manual_seed(0)
    train = torch.randn(200, 12) @ torch.randn(12, 12) + 5.0  # far from the origin: centring matters
    pca = PCAFeaturizer(12)
    pca.fit(train)
    assert torch.allclose(pca.mean, train.mean(0), atol=1e-4)
    v = pca.components
    assert torch.allclose(v.T @ v, torch.eye(12), atol=1e-5)
    f, _ = pca.featurize(train)
    assert f.mean(0).abs().max() < 1e-3  # centred features
    assert (pca.explained_variance[:-1] >= pca.explained_variance[1:]).all()
    assert torch.allclose(f.var(0), pca.explained_variance, rtol=1e-3)
    test = torch.randn(30, 12) * 3
    f, e = pca.featurize(test)
    assert torch.allclose(pca.inverse(f, e), test, atol=1e-4)
    top = PCAFeaturizer(12, n_features=3)
    top.fit(train)
    f, e = top.featurize(test)
    assert f.shape == (30, 3) and torch.allclose(top.inverse(f, e), test, atol=1e-4)


def test_pca_refuses_too_little_data():
    with pytest.raises(Exception, match="at least two"):
        PCAFeaturizer(4).fit(torch.randn(1, 4))


def _random_sae(architecture: str, d: int = 16, m: int = 40, seed: int = 0) -> SAEFeaturizer:
    g = torch.Generator().manual_seed(seed)
    extra = {"k": 6} if architecture == "topk" else {}
    sae = SAEFeaturizer(d, m, architecture, **extra)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, m, generator=g) / d ** 0.5)
        sae.W_dec.copy_(torch.randn(m, d, generator=g) / m ** 0.5)
        sae.b_enc.copy_(torch.randn(m, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(d, generator=g) * 0.1)
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(m, generator=g) * 0.3)
    return sae


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_sae_round_trip_is_exact_with_its_error_term(architecture):
    sae = _random_sae(architecture)
    x = torch.randn(50, 16, dtype=torch.float64)
    f, e = sae.featurize(x)
    assert (f >= 0).all() and (f == 0).any()
    if architecture == "topk":
        assert ((f != 0).sum(-1) <= 6).all()
    assert e.abs().max() > 1e-2  # a random SAE reconstructs badly: the error term is doing the work
    assert torch.allclose(sae.inverse(f, e), x, atol=1e-6)
    # swapping every latent changes exactly the reconstructed part
    base, source = x[:25], x[25:]
    out = Interchange(sae)(base, source)
    expected = base - sae.decode(sae.encode(base)).double() + sae.decode(sae.encode(source)).double()
    assert torch.allclose(out, expected, atol=1e-5)


# -------------------------------------------------------------------------------------- saved files
def _examples_of_every_kind(d: int):
    torch.manual_seed(0)
    pca = PCAFeaturizer(d)
    pca.fit(torch.randn(64, d))
    mask = LearnedMask(d, sparsity=0.1)
    with torch.no_grad():
        mask.logits.copy_(torch.randn(d))
    return {
        "identity": Interchange(IdentityFeaturizer(d)),
        "subspace": Interchange(SubspaceFeaturizer(d, 4)),
        "pca-fixed": Interchange(pca, FixedFeatures(d, [0, 1, 2])),
        "dbm": Interchange(IdentityFeaturizer(d), mask),
        "sae-all": Interchange(_random_sae("jumprelu", d=d), AllFeatures(40)),
    }


@pytest.mark.parametrize("kind", ["identity", "subspace", "pca-fixed", "dbm", "sae-all"])
def test_saved_interventions_reload_to_the_same_outputs(tmp_path, kind):
    interchange = _examples_of_every_kind(16)[kind]
    card = save_interchange(interchange, tmp_path, layer=2, role="END", model="m", task="t", variable="v",
                            method="x", arguments={"a": 1})
    assert card.name == "L2_END.json" and (tmp_path / "L2_END.safetensors").is_file()
    meta, loaded = load_interchange(card)
    assert (meta.layer, meta.role, meta.task, meta.variable) == (2, "END", "t", "v")
    base, source = torch.randn(6, 16), torch.randn(6, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(base, source), interchange(base, source), atol=1e-6)
    assert torch.equal(loaded.selection.selected(), interchange.selection.selected())


def test_malformed_featurizer_files_name_the_file_and_field(tmp_path):
    interchange = _examples_of_every_kind(16)["subspace"]
    card = save_interchange(interchange, tmp_path, layer=0, role="END")
    raw = json.loads(card.read_text())

    def broken(change) -> str:
        data = json.loads(json.dumps(raw))
        change(data)
        card.write_text(json.dumps(data))
        with pytest.raises(FeaturizerFileError) as info:
            load_interchange(card)
        return str(info.value)

    message = broken(lambda d: d["featurizer"].update({"class": "rotation"}))
    assert str(card) in message and "featurizer" in message and "subspace" in message  # did you mean
    message = broken(lambda d: d.pop("layer"))
    assert str(card) in message and "layer" in message
    message = broken(lambda d: d["featurizer"]["config"].update({"n_features": 5}))
    assert str(card) in message and "selection.config.n_features: 4, but the featurizer has 5 features" in message

    def wider(data):
        data["featurizer"]["config"]["n_features"] = data["selection"]["config"]["n_features"] = 5
        data["n_features"] = 5

    message = broken(wider)
    assert "L0_END.safetensors" in message and "do not fit" in message
    message = broken(lambda d: d.update({"format": "pickle"}))
    assert "field format" in message
    card.write_text(json.dumps(raw))
    (tmp_path / "L0_END.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(FeaturizerFileError, match="not a safetensors file"):
        load_interchange(card)


# ------------------------------------------------------------------------------------------- training
def test_interchange_training_lowers_the_loss_toward_patched_labels():
    """Labels = what full-vector patching makes the model say, so a perfect intervention exists; DAS and DBM
    training must move toward it."""
    model = tiny_model("gpt2", n_layers=2)
    runner = ResidualRunner(adapter_for(model))
    pairs = _pairs(7)
    full = Interchange(IdentityFeaturizer(runner.d_model))
    labels = _ours(runner, full, pairs, 0, "x").argmax(-1, keepdim=True)
    pairs = _pairs(7, answer_ids=labels)
    site = LayerCache(runner, pairs, 0).site("x")
    flags = [p.requires_grad for p in model.parameters()]
    for interchange in (Interchange(SubspaceFeaturizer(runner.d_model, 8)),
                        Interchange(IdentityFeaturizer(runner.d_model), LearnedMask(runner.d_model))):
        torch.manual_seed(0)
        history = train_interchange(runner, interchange, site, TrainingSettings(epochs=30, lr=0.05, batch_size=B))
        assert history[-1] < 0.9 * history[0], history
        trained = _ours(runner, interchange, pairs, 0, "x").argmax(-1)
        assert torch.equal(trained, labels[:, 0])  # the hard intervention now says what full patching says
        assert [p.requires_grad for p in model.parameters()] == flags  # frozen only while training
    assert train_interchange(runner, full, site, TrainingSettings(epochs=3)) == []  # nothing to train


# ------------------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("kind", ["identity", "subspace", "pca-fixed", "dbm", "sae-all"])
def test_every_built_in_featurizer_survives_the_round_trip_check(kind):
    from mibench.causal.roundtrip import round_trip_difference

    assert round_trip_difference(_examples_of_every_kind(16)[kind]) is None


def test_state_kept_outside_tensors_fails_the_round_trip_check():
    """A fitted rotation kept in a plain attribute is lost when saved: the check names it instead of letting
    re-scoring silently give another number."""
    from mibench.causal.arguments import FeaturizerArguments
    from mibench.causal.featurizer import register_featurizer
    from mibench.causal.roundtrip import round_trip_difference

    @register_featurizer("lossy:plain-rotation")
    class PlainRotation(IdentityFeaturizer):
        Arguments = FeaturizerArguments

        def __init__(self, d_model: int) -> None:
            super().__init__(d_model)
            self.rotation = torch.eye(d_model)  # a plain attribute: not in the state dict

        def fit(self, activations):
            self.rotation = torch.linalg.qr(torch.randn(self.d_model, self.d_model,
                                                        generator=torch.Generator().manual_seed(1)))[0]

        def featurize(self, x):
            return x @ self.rotation, torch.zeros_like(x)

        def inverse(self, features, error):
            return features @ self.rotation.T + error

    featurizer = PlainRotation(16)
    interchange = Interchange(featurizer, FixedFeatures(16, list(range(8))))
    assert round_trip_difference(interchange) is None  # unfitted, nothing is lost yet
    featurizer.fit(torch.randn(32, 16))
    difference = round_trip_difference(interchange)
    assert difference is not None and "'lossy:plain-rotation' computes something else" in difference
    assert "register it as a buffer" in difference
