"""A hostile corpus: submissions built to execute code, exhaust memory or be scored as something they are not.

Each variant changes one file of a valid submission (causal track: a featurizer folder; circuit track: a
cell's score file). ``mibench submission check``, ``mibench submission evaluate`` and ``mibench score`` must
all refuse it, name the file (and the field where there is one), print no traceback, write nothing, run no
code (no marker file appears, though the marker module is importable), and stay within a second and
100 MB each -- they refuse from the files, before any model is loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mibench.causal.featurizer import (
    FixedFeatures,
    IdentityFeaturizer,
    Interchange,
    LearnedMask,
    SubspaceFeaturizer,
)
from mibench.causal.storage import save_interchange
from mibench.cli import main
from mibench.submissions.example import write_random_submission
from tests.test_submissions_causal import _card

MODELS = ("gpt2-tasks", "llama-tasks")  # both d_model 192, 3 layers
CELLS = {"mcqa": "answer_pointer", "ioi": "output_token"}
TARGET_TASK, TARGET_MODEL, TARGET_VARIABLE = "ioi", "llama-tasks", "output_token"
SECONDS = 1.0
MEMORY = 100 * 2**20
MARKER = "MARKER_WRITTEN"


class RunsCode:
    """Unpickling this would run a shell command that leaves the marker file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass(frozen=True)
class Variant:
    name: str
    track: str
    change: Callable[[Path, Path], Path]  # (target folder or file's cell, marker) -> the hostile file
    field: str | None = None


# --------------------------------------------------------------------------------------- base folders
def _causal_site_folder(folder: Path, task: str, variable: str, model: str) -> None:
    context = {"task": task, "variable": variable, "model": model, "method": "hostile-base"}
    subspace = SubspaceFeaturizer(192, 4)
    save_interchange(Interchange(subspace, LearnedMask(4)), folder, layer=0, role="END", **context)
    for layer in (1, 2):
        interchange = Interchange(IdentityFeaturizer(192), FixedFeatures(192, list(range(0, 192, 2))))
        save_interchange(interchange, folder, layer=layer, role="END", **context)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    causal = root / "causal" / "hostile"
    _card(causal)
    for task, variable in CELLS.items():
        for model in MODELS:
            _causal_site_folder(causal / f"{task}_{model}" / variable, task, variable, model)
    circuit = root / "circuit" / "hostile"
    write_random_submission(circuit, MODELS, list(CELLS))
    for base in (causal, circuit):
        assert main(["submission", "check", str(base)]) == 0
    return {"causal": causal, "circuit": circuit}


# ------------------------------------------------------------------------------------------ causal
def _edit_card(name: str, edit: Callable[[dict], None]) -> Callable[[Path, Path], Path]:
    def change(folder: Path, marker: Path) -> Path:
        path = folder / name
        card = json.loads(path.read_text())
        edit(card)
        path.write_text(json.dumps(card))
        return path
    return change


def _config(part: str, **values) -> Callable[[dict], None]:
    return lambda card: card[part]["config"].update(values)


def _set(part: str, key: str, value) -> Callable[[dict], None]:
    return lambda card: card[part].update({key: value})


def _write(name: str, data: bytes | Callable[[Path], bytes]) -> Callable[[Path, Path], Path]:
    def change(folder: Path, marker: Path) -> Path:
        path = folder / name
        path.write_bytes(data(marker) if callable(data) else data)
        return path
    return change


def _pickle(marker: Path) -> bytes:
    return pickle.dumps({"weights": RunsCode(marker)})


def _torch_pickle(marker: Path) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"weights": RunsCode(marker)}, buffer)
    return buffer.getvalue()


ROTATION = "featurizer.rotation.parametrizations.weight.original"


def _tensors(**changes) -> Callable[[Path, Path], Path]:
    """Rewrite L0_END.safetensors (a 4-feature subspace and its mask) with some tensors changed."""
    def change(folder: Path, marker: Path) -> Path:
        tensors = {ROTATION: torch.linalg.qr(torch.randn(192, 4))[0].T.contiguous(), "selection.logits": torch.zeros(4)}
        for name, value in changes.items():
            name = name.replace("__", ".")
            if value is None:
                tensors.pop(name)
            else:
                tensors[name] = value(tensors.get(name)) if callable(value) else value
        path = folder / "L0_END.safetensors"
        save_file(tensors, str(path))
        return path
    return change


def _safetensors_header(length: int) -> Callable[[Path, Path], Path]:
    return _write("L0_END.safetensors", struct.pack("<Q", length) + b"{}")


def _symlink(name: str, to: Callable[[Path], Path]) -> Callable[[Path, Path], Path]:
    def change(folder: Path, marker: Path) -> Path:
        path = folder / name
        if path.exists():
            path.unlink()
        path.symlink_to(to(folder))
        return path
    return change


def _marker_module(folder: Path, marker: Path) -> None:
    """A module that writes the marker when imported, importable from anywhere in the test process."""
    (marker.parent / "hostile_marker_module.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nclass Evil: pass\nEvil = Evil\n")


def _class_from_marker_module(class_name: str) -> Callable[[Path, Path], Path]:
    edit = _edit_card("L1_END.json", _set("featurizer", "class", class_name))

    def change(folder: Path, marker: Path) -> Path:
        _marker_module(folder, marker)
        return edit(folder, marker)
    return change


def _orphan(folder: Path, marker: Path) -> Path:
    (folder / "L1_END.json").unlink()
    return folder / "L1_END.safetensors"


def _missing_tensors(folder: Path, marker: Path) -> Path:
    path = folder / "L1_END.safetensors"
    path.unlink()
    return path


def _rename_site(new: str) -> Callable[[Path, Path], Path]:
    def change(folder: Path, marker: Path) -> Path:
        for suffix in (".json", ".safetensors"):
            (folder / f"L1_END{suffix}").rename(folder / f"{new}{suffix}")
        return folder / f"{new}.json"
    return change


def _named_pipe(name: str) -> Callable[[Path, Path], Path]:
    def change(folder: Path, marker: Path) -> Path:
        path = folder / name
        path.unlink()
        os.mkfifo(path)  # reading it would block forever
        return path
    return change


def _subfolder(folder: Path, marker: Path) -> Path:
    path = folder / "nested"
    path.mkdir()
    (path / "L0_END.json").write_text("{}")
    return path


def _huge_card(folder: Path, marker: Path) -> Path:
    path = folder / "L1_END.json"
    card = json.loads(path.read_text())
    card["arguments"] = {"padding": "x" * (2 << 20)}
    path.write_text(json.dumps(card))
    return path


SAE = {"class": "sae", "config": {"d_model": 192, "d_sae": 512, "source": "embedded:gpt2-tasks/layer_1"}}


def _sae_card(**config) -> Callable[[dict], None]:
    def edit(card: dict) -> None:
        card["featurizer"] = {"class": "sae", "config": {**SAE["config"], **config}}
        card["selection"] = {"class": "all", "config": {"n_features": config.get("d_sae", 512)}}
        card["n_features"], card["n_selected"] = config.get("d_sae", 512), config.get("d_sae", 512)
    return edit


J1 = "L1_END.json"
CAUSAL = [
    # class paths that would run code if anything imported or called them
    Variant("class-os-system", "causal", _edit_card(J1, _set("featurizer", "class", "os.system")), "featurizer.class"),
    Variant("class-builtins-eval", "causal", _edit_card(J1, _set("featurizer", "class", "builtins.eval")),
            "featurizer.class"),
    Variant("class-subprocess-popen", "causal", _edit_card(J1, _set("featurizer", "class", "subprocess.Popen")),
            "featurizer.class"),
    Variant("class-colon-os-system", "causal", _edit_card(J1, _set("featurizer", "class", "os:system")),
            "featurizer.class"),
    Variant("selection-os-system", "causal", _edit_card(J1, _set("selection", "class", "os.system")),
            "selection.class"),
    Variant("class-marker-module-dotted", "causal", _class_from_marker_module("hostile_marker_module.Evil"),
            "featurizer.class"),
    Variant("class-marker-module-namespaced", "causal", _class_from_marker_module("hostile_marker_module:evil"),
            "featurizer.class"),
    Variant("class-not-a-string", "causal", _edit_card(J1, _set("featurizer", "class", ["os", "system"])),
            "featurizer"),
    # arguments: types, ranges, sizes -- refused before any constructor runs
    Variant("d-model-abc", "causal", _edit_card(J1, _config("featurizer", d_model="abc")), "featurizer.config.d_model"),
    Variant("d-model-bool", "causal", _edit_card(J1, _config("featurizer", d_model=True)), "featurizer.config.d_model"),
    Variant("d-model-float", "causal", _edit_card(J1, _config("featurizer", d_model=192.0)),
            "featurizer.config.d_model"),
    Variant("d-model-huge-subspace", "causal",
            _edit_card("L0_END.json", _config("featurizer", d_model=20000)), "featurizer.config.d_model"),
    Variant("pca-n-features-negative", "causal",
            _edit_card(J1, lambda c: c["featurizer"].update({"class": "pca", "config": {"d_model": 192,
                                                                                       "n_features": -5}})),
            "featurizer.config.n_features"),
    Variant("pca-n-features-1e7", "causal",
            _edit_card(J1, lambda c: c["featurizer"].update({"class": "pca", "config": {"d_model": 192,
                                                                                       "n_features": 10**7}})),
            "featurizer.config.n_features"),
    Variant("subspace-n-features-1e9", "causal", _edit_card("L0_END.json", _config("featurizer", n_features=10**9)),
            "featurizer.config.n_features"),
    Variant("sae-d-sae-1e9", "causal", _edit_card(J1, _sae_card(d_sae=10**9, source=None)), "featurizer.config.d_sae"),
    Variant("unknown-argument", "causal", _edit_card(J1, _config("featurizer", evil=1)), "featurizer.config.evil"),
    Variant("fixed-index-out-of-range", "causal", _edit_card(J1, _config("selection", indices=[10**6])),
            "selection.config.indices[0]"),
    Variant("mask-sparsity-nan", "causal", _edit_card("L0_END.json", _config("selection", sparsity=float("nan"))),
            "selection.config.sparsity"),
    Variant("selection-size-mismatch", "causal", _edit_card(J1, _config("selection", n_features=7)),
            "selection.config.n_features"),
    Variant("n-features-lie", "causal", _edit_card(J1, lambda c: c.update(n_features=7)), "n_features"),
    Variant("n-selected-huge", "causal", _edit_card(J1, lambda c: c.update(n_selected=10**9)), "n_selected"),
    # the card itself
    Variant("card-not-utf8", "causal", _write(J1, b'{"format": "\xff\xfe mibench"}')),
    Variant("card-not-json", "causal", _write(J1, b"format: mibench-featurizer\n")),
    Variant("card-json-list", "causal", _write(J1, b"[1, 2, 3]")),
    Variant("card-2-mb", "causal", _huge_card),
    Variant("card-format-pickle", "causal", _edit_card(J1, lambda c: c.update(format="pickle")), "format"),
    Variant("card-layer-string", "causal", _edit_card(J1, lambda c: c.update(layer="1")), "layer"),
    # what the card says against where it sits
    Variant("card-layer-2-in-l1-file", "causal", _edit_card(J1, lambda c: c.update(layer=2)), "layer"),
    Variant("card-role-dotdot", "causal", _edit_card(J1, lambda c: c.update(role="../../x")), "role"),
    Variant("card-model-mismatch", "causal", _edit_card(J1, lambda c: c.update(model="gpt2-tasks")), "model"),
    Variant("card-task-mismatch", "causal", _edit_card(J1, lambda c: c.update(task="mcqa")), "task"),
    Variant("card-variable-mismatch", "causal", _edit_card(J1, lambda c: c.update(variable="output_position")),
            "variable"),
    Variant("file-layer-outside", "causal", _rename_site("L7_END"), "layer"),
    Variant("file-role-unknown", "causal", _rename_site("L1_nowhere"), "role"),
    # SAE sources
    Variant("sae-source-absolute", "causal", _edit_card(J1, _sae_card(source="/etc")), "featurizer.config.source"),
    Variant("sae-source-relative", "causal", _edit_card(J1, _sae_card(source="../../outside")),
            "featurizer.config.source"),
    Variant("sae-source-embedded-escape", "causal", _edit_card(J1, _sae_card(source="embedded:../../../etc")),
            "featurizer.config.source"),
    Variant("sae-source-embedded-unknown", "causal", _edit_card(J1, _sae_card(source="embedded:gpt2-tasks/layer_9")),
            "featurizer.config.source"),
    Variant("sae-source-settings-differ", "causal", _edit_card(J1, _sae_card(d_sae=256)), "featurizer.config.d_sae"),
    # tensors
    Variant("tensors-float64", "causal", _tensors(**{"selection__logits": torch.zeros(4, dtype=torch.float64)}),
            "selection.logits"),
    Variant("tensors-bfloat16", "causal", _tensors(**{"selection__logits": torch.zeros(4, dtype=torch.bfloat16)}),
            "selection.logits"),
    Variant("tensors-int8", "causal", _tensors(**{ROTATION.replace(".", "__"): torch.zeros(4, 192, dtype=torch.int8)}),
            ROTATION),
    Variant("tensors-nan", "causal", _tensors(**{"selection__logits": torch.full((4,), float("nan"))}),
            "selection.logits"),
    Variant("tensors-inf", "causal", _tensors(**{"selection__logits": torch.full((4,), float("inf"))}),
            "selection.logits"),
    Variant("tensors-wrong-shape", "causal", _tensors(**{ROTATION.replace(".", "__"): torch.zeros(8, 192)}), ROTATION),
    Variant("tensors-extra", "causal", _tensors(evil=torch.zeros(10)), "evil"),
    Variant("tensors-missing", "causal", _tensors(**{"selection__logits": None}), "selection.logits"),
    Variant("safetensors-is-a-pickle", "causal", _write("L0_END.safetensors", _pickle)),
    Variant("safetensors-is-a-torch-pickle", "causal", _write("L0_END.safetensors", _torch_pickle)),
    Variant("safetensors-header-2-to-60", "causal", _safetensors_header(2**60)),
    Variant("safetensors-truncated", "causal",
            lambda folder, marker: _write("L0_END.safetensors",
                                          (folder / "L0_END.safetensors").read_bytes()[:-16])(folder, marker)),
    Variant("tensors-without-card", "causal", _orphan),
    Variant("card-without-tensors", "causal", _missing_tensors),
    # stray files and links
    Variant("stray-pickle-pkl", "causal", _write("weights.pkl", _pickle)),
    Variant("stray-torch-pt", "causal", _write("weights.pt", _torch_pickle)),
    Variant("stray-python", "causal", _write("featurizer.py", lambda m: f"open({str(m)!r}, 'w')\n".encode())),
    Variant("stray-hidden", "causal", _write(".hidden.json", b"{}")),
    Variant("stray-folder", "causal", _subfolder),
    Variant("symlink-card-to-system-file", "causal", _symlink(J1, lambda folder: Path("/etc/hostname"))),
    Variant("named-pipe-card", "causal", _named_pipe(J1)),
    Variant("named-pipe-tensors", "causal", _named_pipe("L1_END.safetensors")),
    Variant("symlink-tensors-to-sibling", "causal", _symlink("L1_END.safetensors",
                                                             lambda folder: folder / "L2_END.safetensors")),
]


# ------------------------------------------------------------------------------------------ circuit
def _replace_importances(suffix: str, data: Callable[[Path], bytes] | bytes) -> Callable[[Path, Path], Path]:
    def change(cell: Path, marker: Path) -> Path:
        (cell / "importances.json").unlink()
        return _write(f"importances{suffix}", data)(cell, marker)
    return change


def _cfg(**values) -> Callable[[Path, Path], Path]:
    def change(cell: Path, marker: Path) -> Path:
        path = cell / "importances.json"
        data = json.loads(path.read_text())
        data["cfg"].update(values)
        path.write_text(json.dumps(data))
        return path
    return change


CIRCUIT = [
    Variant("circuit-pt-pickle-runs-code", "circuit", _replace_importances(".pt", _torch_pickle)),
    Variant("circuit-pth-plain-pickle", "circuit", _replace_importances(".pth", _pickle)),
    Variant("circuit-safetensors-is-a-pickle", "circuit", _replace_importances(".safetensors", _pickle)),
    Variant("circuit-json-not-utf8", "circuit", _write("importances.json", b'{"cfg": "\xff\xfe"}')),
    Variant("circuit-json-not-json", "circuit", _write("importances.json", b"cfg: nope")),
    Variant("circuit-cfg-other-model", "circuit", _cfg(n_layers=12), "cfg"),
    Variant("circuit-cfg-d-model-abc", "circuit", _cfg(d_model="abc"), "cfg.d_model"),
    Variant("circuit-symlink", "circuit", _symlink("importances.json", lambda cell: Path("/etc/hostname"))),
    Variant("circuit-stray-python", "circuit", _write("evil.py", b"import os\n")),
    Variant("circuit-stray-pickle", "circuit", _write("evil.pkl", _pickle)),
    Variant("circuit-named-pipe", "circuit", _named_pipe("importances.json")),
]
VARIANTS = CAUSAL + CIRCUIT


def test_the_corpus_is_large_and_covers_both_tracks():
    assert len(VARIANTS) >= 40 and len({v.name for v in VARIANTS}) == len(VARIANTS)
    assert {v.track for v in VARIANTS} == {"causal", "circuit"}


# ----------------------------------------------------------------------------------------- measuring
def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def measured(run: Callable[[], int]) -> tuple[int, float, int]:
    """Exit status, CPU seconds, and peak memory growth in bytes: the resident-set high-water mark (reset
    through /proc/self/clear_refs, so torch's allocations count) where Linux offers it, else tracemalloc.

    CPU time of this process, not wall time: the bound is there to catch a file that makes a command work
    (decompress, parse, allocate) before refusing it, and CPU time measures that whether or not other jobs
    share the machine."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set size
        before = _status_kb("VmRSS")
    except OSError:
        before = None
    if before is None:
        tracemalloc.start()
    start = time.process_time()
    status = run()
    seconds = time.process_time() - start
    if before is None:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return status, seconds, peak
    return status, seconds, max(0, (_status_kb("VmHWM") or 0) - before) * 1024


def test_the_memory_measure_sees_tensor_allocations():
    def allocate() -> int:
        block = torch.ones(64 * 2**20 // 4 * 3)  # 192 MB, allocated by torch, not by Python
        return int(block[0])

    assert measured(allocate)[2] > MEMORY


# ------------------------------------------------------------------------------------------- the test
@pytest.fixture
def hostile(bases, tmp_path, monkeypatch):
    def build(variant: Variant) -> tuple[Path, Path, Path, list[str]]:
        folder = tmp_path / "submissions" / "hostile"
        shutil.copytree(bases[variant.track], folder, symlinks=True)
        marker = tmp_path / MARKER
        monkeypatch.syspath_prepend(str(tmp_path))  # the marker module is importable, should anyone try
        cell = folder / f"{TARGET_TASK}_{TARGET_MODEL}"
        if variant.track == "causal":
            target = cell / TARGET_VARIABLE
            hostile_file = variant.change(target, marker)
            score = ["score", "--track", "causal", str(target), "--task", TARGET_TASK, "--variable",
                     TARGET_VARIABLE, "--model", TARGET_MODEL]
        else:
            hostile_file = variant.change(cell, marker)
            score = ["score", str(hostile_file), "--task", TARGET_TASK, "--model", TARGET_MODEL]
        return folder, hostile_file, marker, score
    yield build
    sys.modules.pop("hostile_marker_module", None)


def _lines_about(output: str, path: Path) -> list[str]:
    """The problem lines naming ``path`` (a single problem comes as ``mibench: error: <problem> (...)``)."""
    prefix = f"{path}: "
    lines = (line.strip().removeprefix("mibench: error: ").removesuffix(" (nothing was scored)")
             for line in output.splitlines())
    return sorted(line for line in lines if line.startswith(prefix))


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_every_command_refuses_the_hostile_file_alike(variant, hostile, capsys, tmp_path):
    folder, hostile_file, marker, score = hostile(variant)
    out = tmp_path / "records"
    commands = {
        "check": ["submission", "check", str(folder)],
        "evaluate": ["submission", "evaluate", str(folder), "--output-dir", str(out), "--quiet"],
        "score": [*score, "--output-dir", str(out), "--quiet"],
    }
    about: dict[str, list[str]] = {}
    for name, argv in commands.items():
        status, seconds, memory = measured(lambda: main(argv))
        captured = capsys.readouterr()
        output = captured.out + captured.err
        assert status in (1, 2), f"{name} accepted {variant.name}:\n{output}"
        assert "Traceback" not in output
        assert seconds < SECONDS, f"{name} took {seconds:.2f} CPU s on {variant.name}"
        assert memory < MEMORY, f"{name} grew by {memory / 2**20:.0f} MB on {variant.name}"
        lines = _lines_about(output, hostile_file)
        assert lines, f"{name} does not name {hostile_file}:\n{output}"
        if variant.field is not None:
            assert any(line.startswith(f"{hostile_file}: {variant.field}: ") for line in lines), (name, lines)
        about[name] = lines
    assert not marker.exists(), "code from the submission ran"
    assert not out.exists() or not any(out.rglob("*.json")), "something was scored"
    assert about["check"] == about["evaluate"]
    if variant.track == "causal":  # the same rules on the same folder: the very same words
        assert about["score"] == about["check"]
