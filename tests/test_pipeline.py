"""The shared pieces of the run pipeline: eligibility, padding, staging, and the baseline via the registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mibench.data.padding import pad_token_id, right_pad
from mibench.pipeline.header import eligibility_notes
from mibench.pipeline.staging import RECORD_NAME, publish, staged_folder


def test_eligibility_is_decided_from_split_limit_and_checkout():
    assert eligibility_notes("test", None, "abc123") == []
    assert eligibility_notes("private_test", None, None) == []
    assert eligibility_notes("validation", 10, "abc123+dirty") == [
        "split 'validation' is not a test split",
        "evaluated on the first 10 examples only (--limit)",
        "produced from a modified checkout",
    ]


def test_right_pad_left_aligns_rows_and_masks_the_padding():
    ids, mask = right_pad([[5, 6, 7], [8], []], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1], [1, 1, 1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    wide, _ = right_pad([[2]], pad_id=0, width=3)
    assert wide.tolist() == [[2, 0, 0]]


def test_pad_token_id_defaults_to_zero():
    class NoPad:
        pad_token_id = None

    class Pad:
        pad_token_id = 3

    assert pad_token_id(NoPad()) == 0 and pad_token_id(Pad()) == 3 and pad_token_id(object()) == 0


def test_publish_moves_every_file_and_the_record_last(tmp_path, monkeypatch):
    import os

    staging = tmp_path / "stage"
    (staging / "featurizers").mkdir(parents=True)
    for name in (RECORD_NAME, "scores.json", "featurizers/L0_END.json", "z.png"):
        (staging / name).write_text(name)
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(b).name), real_replace(a, b)))
    publish(staging, tmp_path / "final")
    assert moved[-1] == RECORD_NAME and len(moved) == 4
    assert (tmp_path / "final" / "featurizers" / "L0_END.json").read_text() == "featurizers/L0_END.json"


def test_a_failed_run_leaves_no_staging_and_no_new_output_folder(tmp_path):
    root = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt), staged_folder(root) as staging:
        (staging / "scores.json").write_text("{}")
        raise KeyboardInterrupt
    assert not root.exists()
    (root / "earlier").mkdir(parents=True)
    with pytest.raises(RuntimeError), staged_folder(root) as staging:
        raise RuntimeError
    assert [p.name for p in root.iterdir()] == ["earlier"]  # an existing output folder is kept as it was


@pytest.mark.parametrize("level", ["edge", "node", "neuron"])
def test_the_baseline_reached_through_the_registry_is_the_seeded_random_graph(random_task_model, level):
    from mibench.circuits.method import AttributionContext, load_method
    from mibench.engine.engine import PatchingEngine
    from mibench.models.loading import load_model

    engine = PatchingEngine(load_model(random_task_model, load_tokenizer=False).adapter)
    graph = load_method("random").score(AttributionContext(engine, [], level=level, seed=7))
    generator = torch.Generator().manual_seed(7)  # the oracle: standard normals drawn in the graph's shape
    if level == "edge":
        expected = torch.randn(graph.edge_scores.shape, generator=generator) * graph.real_edge_mask
        assert torch.equal(graph.edge_scores, expected)
    elif level == "node":
        assert torch.equal(graph.node_scores, torch.randn(graph.n_forward, generator=generator))
    else:
        assert torch.equal(graph.neuron_scores, torch.randn(graph.n_forward, graph.d_model, generator=generator))


def test_staging_folders_of_ended_processes_are_removed_and_live_ones_kept(tmp_path):
    """A run killed outright cannot clean up; the next run in the same folder removes what it left."""
    import os
    import socket
    import subprocess
    import sys

    from mibench.pipeline.staging import remove_abandoned_staging, staged_folder

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(ended.stdout)
    host = socket.gethostname()
    abandoned = tmp_path / f".run-{host}-{dead_pid}-abc123.partial"
    live = tmp_path / f".run-{host}-{os.getpid()}-def456.partial"
    elsewhere = tmp_path / f".run-otherhost-{dead_pid}-ghi789.partial"
    for folder in (abandoned, live, elsewhere):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "scores.json").write_text("{}")
    assert remove_abandoned_staging(tmp_path) == [abandoned]
    assert live.exists() and elsewhere.exists() and not abandoned.exists()
    with staged_folder(tmp_path) as staging:
        assert staging.name.startswith(f".run-{host}-{os.getpid()}-")
    assert not staging.exists()
