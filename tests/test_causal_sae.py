"""SAEs in the SAELens folder layout: reading every release's cfg.json, writing, refusing what cannot work,
and the embedded SAEs of the zoo models (real reconstructions, exact round trips through the error term)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mibench.causal.sae import (
    SAEFeaturizer,
    SAEFolderError,
    embedded_sae_path,
    embedded_saes,
    load_sae,
    read_sae_config,
    reconstruction_stats,
    sae_for,
    sae_metadata,
    save_sae,
)
from mibench.errors import MibenchError

D, M = 16, 40


def _weights(architecture: str = "standard", seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tensors = {"W_enc": torch.randn(D, M, generator=g), "b_enc": torch.randn(M, generator=g),
               "W_dec": torch.randn(M, D, generator=g), "b_dec": torch.randn(D, generator=g)}
    if architecture == "jumprelu":
        tensors["threshold"] = torch.rand(M, generator=g)
    return tensors


def _folder(tmp_path, cfg: dict, tensors: dict[str, torch.Tensor], name: str = "sae"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    return folder


def test_saelens_6_nested_topk_config_is_read(tmp_path):
    cfg = {"d_in": D, "d_sae": M, "architecture": "topk", "k": 5, "dtype": "float32", "sae_lens_version": "6.5.1",
           "normalize_activations": "none", "apply_b_dec_to_input": False, "rescale_acts_by_decoder_norm": True,
           "metadata": {"model_name": "gemma-2-2b", "hook_name": "blocks.3.hook_resid_post", "hook_layer": 3}}
    sae = load_sae(_folder(tmp_path, cfg, _weights()), d_model=D)
    assert (sae.architecture, sae.k, sae.apply_b_dec_to_input, sae.rescale_acts_by_decoder_norm) == (
        "topk", 5, False, True)
    assert sae_metadata(tmp_path / "sae" / "cfg.json")["hook_name"] == "blocks.3.hook_resid_post"
    x = torch.randn(9, D)
    f = sae.encode(x)
    assert ((f != 0).sum(-1) <= 5).all()
    w = _weights()
    h = (x @ w["W_enc"] + w["b_enc"]) * w["W_dec"].norm(dim=-1)
    top = torch.topk(h, 5, dim=-1)
    manual = torch.zeros_like(h).scatter_(-1, top.indices, torch.relu(top.values))
    assert torch.allclose(f, manual, atol=1e-5)
    assert torch.allclose(sae.decode(f), (manual / w["W_dec"].norm(dim=-1)) @ w["W_dec"] + w["b_dec"], atol=1e-4)


def test_legacy_flat_configs_and_jumprelu_checkpoints(tmp_path):
    cfg = {"d_in": D, "d_sae": M, "architecture": "jumprelu", "hook_point": "blocks.1.hook_resid_post",
           "normalize_activations": False, "activation_fn_kwargs": {}}
    tensors = _weights("jumprelu")
    tensors["log_threshold"] = torch.log(tensors.pop("threshold"))
    tensors["scaling_factor"] = torch.ones(M)
    sae = load_sae(_folder(tmp_path, cfg, tensors))
    assert torch.allclose(sae.threshold, _weights("jumprelu")["threshold"], atol=1e-6)
    assert sae_metadata(tmp_path / "sae" / "cfg.json")["hook_name"] == "blocks.1.hook_resid_post"
    legacy_topk = {"d_in": D, "d_sae": M, "architecture": "topk", "activation_fn_kwargs": {"k": 7}}
    assert read_sae_config(_folder(tmp_path, legacy_topk, _weights(), "old") / "cfg.json")["k"] == 7


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_save_then_load_is_the_same_sae(tmp_path, architecture):
    sae = SAEFeaturizer(D, M, architecture, k=4 if architecture == "topk" else None)
    sae.load_state_dict(_weights(architecture))
    folder = save_sae(sae, tmp_path / "out", model_name="m", hook_layer=1)
    again = load_sae(folder, d_model=D)
    assert again.source == str(folder.resolve())  # what a saved featurizer will reference
    assert {**again.config(), "source": None} == {**sae.config(), "source": None}
    x = torch.randn(12, D)
    assert torch.equal(again.encode(x), sae.encode(x))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == D and cfg["normalize_activations"] == "none" and cfg["model_name"] == "m"
    with pytest.raises(MibenchError, match="would override"):
        save_sae(sae, tmp_path / "again", d_sae=3)


@pytest.mark.parametrize("change, field, message", [
    (lambda c, t: c.pop("d_sae"), "d_sae", "missing"),
    (lambda c, t: c.update(architecture="gated"), "architecture", "unknown architecture"),
    (lambda c, t: c.update(normalize_activations="expected_average_only_in"), "normalize_activations",
     "fold the normalisation"),
    (lambda c, t: c.update(normalize_activations=True), "normalize_activations", "expected_average_only_in"),
    (lambda c, t: c.update(architecture="topk", k=0), "k", "integer k in 1..40"),
    (lambda c, t: c.update(apply_b_dec_to_input="yes"), "apply_b_dec_to_input", "true or false"),
    (lambda c, t: t.pop("b_dec"), "b_dec", "missing tensor"),
    (lambda c, t: t.update(W_enc=torch.randn(D, M + 1)), "W_enc", "shape [16, 41]"),
    (lambda c, t: t.update(extra=torch.zeros(2)), "extra", "unexpected tensor"),
    (lambda c, t: t.update(scaling_factor=torch.full((M,), 2.0)), "scaling_factor", "fine-tuning scale"),
    (lambda c, t: c.update(d_in=D + 1), "d_in", "model's d_model is 16"),
])
def test_unusable_sae_folders_name_the_file_and_the_field(tmp_path, change, field, message):
    cfg, tensors = {"d_in": D, "d_sae": M}, _weights()
    change(cfg, tensors)
    folder = _folder(tmp_path, cfg, tensors)
    with pytest.raises(SAEFolderError) as info:
        load_sae(folder, d_model=D)
    assert info.value.field == field and message in str(info.value)
    assert str(folder) in str(info.value)


def test_missing_folders_and_layers_say_what_exists(tmp_path):
    with pytest.raises(SAEFolderError, match="no such folder"):
        load_sae(tmp_path / "nothing")
    root = tmp_path / "saes"
    sae = SAEFeaturizer(D, M)
    sae.load_state_dict(_weights())
    save_sae(sae, root / "layer_3")
    assert sae_for("some/model", 3, str(root)).d_sae == M
    with pytest.raises(SAEFolderError, match=r"no SAE for layer 1 .*found: layer_3"):
        sae_for("some/model", 1, str(root))
    with pytest.raises(MibenchError, match="no embedded SAE for model 'gpt2'"):
        sae_for("gpt2", 0)


# ------------------------------------------------------------------------------------ the embedded SAEs
@pytest.mark.parametrize("model", ["gpt2-tasks", "llama-tasks"])
def test_every_zoo_model_ships_an_sae_per_layer_that_reconstructs_its_residual_stream(model):
    from training.sae import collect_activations, task_prompts
    from mibench.models.loading import load_model

    assert embedded_saes()[model] == [0, 1, 2]
    loaded = load_model(model)
    prompts = task_prompts(loaded.tokenizer, ["ioi", "mcqa", "arithmetic_addition"], "test", 20)
    activations = collect_activations(loaded, [0, 1, 2], prompts)
    for layer in (0, 1, 2):
        sae = sae_for(model, layer)
        x = activations[layer].x[~activations[layer].is_bos]
        stats = reconstruction_stats(sae, x)
        assert stats["explained_variance"] > 0.85 and 1 < stats["l0"] < 64, (layer, stats)
        f, e = sae.featurize(x)
        assert torch.allclose(sae.inverse(f, e), x, atol=1e-5)  # the error term makes it exact
        card = json.loads((embedded_sae_path(model, layer) / "training.json").read_text())
        assert card["layer"] == layer and card["validation"]["all_positions"]["explained_variance"] > 0.9


def test_saved_sae_featurizers_reference_their_sae_instead_of_copying_it(tmp_path):
    from mibench.causal.featurizer import Interchange, LearnedMask
    from mibench.causal.storage import FeaturizerFileError, load_interchange, save_interchange

    sae = sae_for("gpt2-tasks", 1)
    assert sae.source == "embedded:gpt2-tasks/layer_1" and sae.weights_by_reference
    mask = LearnedMask(sae.n_features)
    with torch.no_grad():
        mask.logits.copy_(torch.randn(sae.n_features))
    card = save_interchange(Interchange(sae, mask), tmp_path, layer=1, role="END")
    stored = tmp_path / "L1_END.safetensors"
    assert stored.stat().st_size < 10_000  # the mask only: 512 logits, not the SAE's 800 kB
    _, again = load_interchange(card)
    x, y = torch.randn(4, 192), torch.randn(4, 192)
    with torch.no_grad():
        assert torch.allclose(again(x, y), Interchange(sae, mask)(x, y), atol=1e-6)
    text = json.loads(card.read_text())
    text["featurizer"]["config"]["d_sae"] = 256  # settings that do not match the referenced SAE
    card.write_text(json.dumps(text))
    with pytest.raises(FeaturizerFileError, match="d_sae"):
        load_interchange(card)
    text["featurizer"]["config"].update(d_sae=512, source="embedded:../../etc")
    card.write_text(json.dumps(text))
    with pytest.raises(FeaturizerFileError, match="embedded SAE is named"):
        load_interchange(card)
