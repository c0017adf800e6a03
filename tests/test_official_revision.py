"""Unpinned official data: a clear warning, and the commit the hub served is remembered.

No published commit of the ``mib-bench/*`` datasets could be verified, so the task cards pin none. A hub
read without ``--data-revision`` must say so once per dataset. The commit it resolved to comes from
``datasets``' cache folder, which is named after the commit, and ``OfficialData.data_revision`` reports it.
The hub is a stub here: ``datasets.load_dataset`` returns fixture rows that carry the cache file names a
real hub read has.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from mibench.data import official  # noqa: E402
from mibench.data.official import OfficialData, OfficialSource, load_official, resolved_commit  # noqa: E402
from mibench.data.registry import load_task  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FIXTURES = Path(__file__).parent / "fixtures" / "official"


class HubRows(list):
    """Rows as ``datasets`` returns them from the hub: iterable, with the cache files of the commit read."""

    def __init__(self, rows, commit: str | None) -> None:
        super().__init__(rows)
        folder = f"/cache/mib-bench___ioi/default/0.0.0/{commit}" if commit else "/cache/local/0.0.0/abcd"
        self.cache_files = [{"filename": f"{folder}/ioi-validation.arrow"}]


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv(official.OFFICIAL_DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(official, "_hub_unreachable", lambda: None)
    monkeypatch.setattr(official, "_RESOLVED", {})
    monkeypatch.setattr(official, "_WARNED", set())
    fixture = FIXTURES / "ioi" / "test.jsonl"
    rows = [json.loads(line) for line in fixture.read_text().splitlines()]
    calls = []

    def load_dataset(path, name=None, **kwargs):
        calls.append(kwargs.get("revision"))
        return HubRows(rows, None if kwargs.get("revision") else COMMIT)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_unpinned_hub_read_warns_once_and_remembers_the_commit(hub, caplog):
    task = OfficialData(load_task("ioi"), OfficialSource())
    assert task.data_revision is None  # nothing read yet
    with caplog.at_level(logging.WARNING, logger="mibench"):
        task.examples("validation", 2)
        task.examples("train", 2)
    warnings = [r.getMessage() for r in caplog.records if "unpinned" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("mib-bench/ioi: the data is unpinned")
    assert f"this run read commit {COMMIT}" in warnings[0] and "--data-revision <commit>" in warnings[0]
    assert task.data_revision == COMMIT
    assert hub == [None, None]


def test_a_pinned_revision_reads_that_commit_without_warning(hub, caplog):
    task = OfficialData(load_task("ioi"), OfficialSource(revision="v1.0"))
    with caplog.at_level(logging.WARNING, logger="mibench"):
        task.examples("validation", 2)
    assert not [r for r in caplog.records if "unpinned" in r.getMessage()]
    assert hub == ["v1.0"] and task.data_revision == "v1.0"


def test_an_undeterminable_commit_is_said_so(hub, caplog, monkeypatch):
    monkeypatch.setattr(official, "resolved_commit", lambda rows: None)
    with caplog.at_level(logging.WARNING, logger="mibench"):
        load_official("ioi", "validation", n=1)
    assert any("could not be determined" in r.getMessage() for r in caplog.records)
    assert official.resolved_revision("ioi") is None


def test_resolved_commit_reads_the_cache_folder():
    assert resolved_commit(HubRows([], COMMIT)) == COMMIT
    assert resolved_commit(HubRows([], None)) is None
    assert resolved_commit([{"prompt": "x"}]) is None  # rows without cache files (a stub, a generator)
