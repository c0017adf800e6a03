"""Optimal ablation: its objective, its fit, its cache, and its use by the methods (tiny float64 models).

* The fit's objective (node ``u`` alone replaced by a constant, through ``edit_sources``) equals the engine's
  node-level ablation (every outgoing edge of ``u`` ablated with a mask) -- two different code paths.
* With the constants equal to the mean, ``--ablation optimal`` is mean ablation exactly, for EAP and exact.
* The fit lowers every node's loss on the fit prompts below mean ablation's.
* The cache: a round trip, named errors for bad files, and one fit for concurrent callers.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from mibench.circuits.attribution import attribute
from mibench.circuits.exact import exact_patching
from mibench.circuits.method import AttributionContext
from mibench.engine import CircuitMask
from mibench.engine import optimal_ablation as oa
from mibench.engine.ablation import Ablation, mean_ablation
from mibench.engine.engine import SourceActivations
from mibench.errors import MibenchError
from tests.tiny_batches import tiny_engine_and_batch

FAST = oa.OptimalAblationSettings(lr=3e-2, max_steps=12, check_every=3, patience=2, prompts_per_step=3)


def _setup(batch: int = 6, seq: int = 7):
    return tiny_engine_and_batch(batch, seq, padded_rows=1)


def _as_optimal(ablation: Ablation) -> Ablation:
    return Ablation("optimal", SourceActivations([g.clone() for g in ablation.sources.groups]))


def test_replacement_objective_is_node_ablation_through_masks():
    engine, data = _setup()
    mean = mean_ablation(engine, [(data.clean_ids, data.attention_mask)])
    nodes = [0, 2, engine.layout.mlp_forward_index(1)]
    with torch.no_grad():
        fast = oa.replacement_losses(engine, data.clean_ids, data.attention_mask, mean.sources.groups, nodes)
        for i, node in enumerate(nodes):
            keep = torch.ones(engine.layout.n_forward, dtype=torch.bool)
            keep[node] = False
            node_mask = CircuitMask.from_nodes(engine.layout, keep)
            logits = engine.forward(data.clean_ids, data.attention_mask, mask=node_mask, ablation=mean,
                                    logit_positions="all").logits
            summed = oa.next_token_loss(logits, data.clean_ids.to(engine.device), data.attention_mask).sum()
            tokens = (data.attention_mask[:, 1:] * data.attention_mask[:, :-1]).sum()
            assert fast[i].item() == pytest.approx((summed / tokens).item(), rel=1e-10)


def test_optimal_ablation_at_the_mean_is_mean_ablation():
    engine, data = _setup()
    mean = mean_ablation(engine, [(data.clean_ids, data.attention_mask)])
    optimal = _as_optimal(mean)
    for score in (lambda kind, ref: attribute(engine, [data], ablation=kind, reference=ref).edge_scores,
                  lambda kind, ref: attribute(engine, [data], ablation=kind, reference=ref,
                                              interpolation="inputs", steps=3).edge_scores,
                  lambda kind, ref: exact_patching(engine, [data], ablation=kind, reference=ref).edge_scores):
        assert torch.equal(score("optimal", optimal), score("mean", mean))


def test_fit_lowers_every_nodes_loss_below_mean_ablation():
    engine, data = _setup()
    prompts = [(data.clean_ids, data.attention_mask)]
    fitted = oa.fit_optimal_ablation(engine, prompts, FAST)
    mean = mean_ablation(engine, prompts)
    nodes = list(range(engine.layout.n_forward))
    with torch.no_grad():
        before = oa.replacement_losses(engine, *prompts[0], mean.sources.groups, nodes)
        after = oa.replacement_losses(engine, *prompts[0], fitted.ablation.sources.groups, nodes)
    assert bool((after < before).all()), (before - after)
    card = fitted.card
    assert card["nodes"] == engine.layout.forward_names and len(card["steps"]) == len(nodes)
    assert max(card["steps"]) <= FAST.max_steps and card["n_prompts"] == data.size


def test_a_stopped_node_keeps_its_constant():
    engine, data = _setup()
    prompts = [(data.clean_ids, data.attention_mask)]
    settings = oa.OptimalAblationSettings(lr=0.3, max_steps=30, check_every=1, patience=1, prompts_per_step=2)
    long = oa.fit_optimal_ablation(engine, prompts, settings)
    stopped = [n for n, s in enumerate(long.card["steps"]) if s < settings.max_steps]
    assert stopped, "with patience 1 and a large learning rate some node stops early"
    node = stopped[0]
    short = oa.fit_optimal_ablation(engine, prompts, oa.OptimalAblationSettings(
        lr=0.3, max_steps=long.card["steps"][node], check_every=1, patience=1, prompts_per_step=2))
    grouped = [(g, u) for g in engine.groups for u in range(g.size)]
    group, unit = grouped[node]
    index = engine.groups.index(group)
    torch.testing.assert_close(long.ablation.sources.groups[index][:, unit],
                               short.ablation.sources.groups[index][:, unit], rtol=1e-9, atol=1e-12)


def test_cache_round_trip_and_bad_files(tmp_path, monkeypatch):
    engine, data = _setup()
    prompts = [(data.clean_ids, data.attention_mask)]
    first = oa.optimal_ablation(engine, prompts, FAST, directory=tmp_path, label={"task": "toy"})
    files = sorted(p.suffix for p in tmp_path.iterdir())
    assert files == [".json", ".lock", ".pt"]

    def no_fit(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(oa, "fit_optimal_ablation", no_fit)
    again = oa.optimal_ablation(engine, prompts, FAST, directory=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first.sources.groups, again.sources.groups))
    pt = next(tmp_path.glob("*.pt"))
    torch.save({"groups": [torch.zeros(2)]}, pt)
    with pytest.raises(MibenchError, match="groups"):
        oa.optimal_ablation(engine, prompts, FAST, directory=tmp_path)
    pt.write_bytes(b"not a torch file")
    with pytest.raises(MibenchError, match=pt.name):
        oa.optimal_ablation(engine, prompts, FAST, directory=tmp_path)


def test_concurrent_runs_needing_one_fit_fit_it_once(tmp_path, monkeypatch):
    """Two runs of a sweep on one machine (say EAP and exact patching on one task) ask for the same constants
    at once: the second waits on the cache entry's lock, then reads what the first fitted."""
    engine, data = _setup()
    prompts = [(data.clean_ids, data.attention_mask)]
    real_fit, fits = oa.fit_optimal_ablation, []

    def slow_counted_fit(*args, **kwargs):
        fits.append(threading.get_ident())
        time.sleep(0.3)  # long enough for the other caller to reach the lock
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(oa, "fit_optimal_ablation", slow_counted_fit)
    results: list[Ablation] = []
    callers = [threading.Thread(target=lambda: results.append(oa.optimal_ablation(engine, prompts, FAST,
                                                                                  directory=tmp_path)))
               for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(fits) == 1 and len(results) == 2
    assert all(torch.equal(a, b) for a, b in zip(results[0].sources.groups, results[1].sources.groups))


def test_context_fits_once_per_model_and_prompts(tmp_path, monkeypatch):
    engine, data = _setup()
    monkeypatch.setenv("MIBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(oa, "DEFAULT_SETTINGS", FAST)
    reference = AttributionContext(engine, [data], ablation="optimal").reference_ablation
    assert reference.kind == "optimal"
    assert len(list((tmp_path / oa.CACHE_SUBDIR).glob("*.pt"))) == 1
    AttributionContext(engine, [data], ablation="optimal").reference_ablation
    assert len(list((tmp_path / oa.CACHE_SUBDIR).glob("*.pt"))) == 1
