"""The run sequence both tracks share: resolve -> load model -> build data -> run the method -> score ->
record -> plot, with the track-specific steps plugged in through :class:`Track`.

What is common is written once here: loading the model (with the user-facing checks on the model name,
dtype and device), the output folder and its staging (nothing partial is ever published), the record
header, the plot and the atomic write of the record. A track (:mod:`mibench.pipeline.circuit`,
:mod:`mibench.pipeline.causal`) says only what differs: which method or saved files it runs, how it
scores, and the track's own record fields.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from mibench.errors import MibenchError
from mibench.pipeline.header import PhaseTimer, RunRequest, record_header, run_folder, shows_progress
from mibench.pipeline.staging import RECORD_NAME, publish, staged_folder
from mibench.results.record import ModelInfo, write_record

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT", bound=RunRequest)
RecordT = TypeVar("RecordT", bound=BaseModel)


@dataclass
class RunResult(Generic[RecordT]):
    """A finished run: its validated record, the folder it was published to, and the record's path."""

    record: RecordT
    folder: Path
    record_path: Path


class Track(ABC, Generic[RequestT, RecordT]):
    """The steps of one track. An instance holds one run's state between the steps."""

    #: file name of the track's main plot, listed in ``artifacts["plot"]`` when drawn
    plot_name: str

    def __init__(self, request: RequestT) -> None:
        from dataclasses import replace

        from mibench.data.registry import get_card
        from mibench.models.loading import resolve_device
        from mibench.pipeline.data import load_run_task

        request = replace(request, device=resolve_device(request.device))  # the record names the device used
        self.request = request
        self.timer = PhaseTimer()
        self.card = get_card(request.task)
        self.task = load_run_task(request, self.card)  # where the examples come from (generated or official)

    @abstractmethod
    def resolve(self) -> None:
        """Check the request against the task card and load the method, before any model is loaded."""

    @abstractmethod
    def build_data(self, loaded: Any) -> None:
        """Tokenise the evaluation (and training/attribution) data for the loaded model."""

    @abstractmethod
    def run_method(self, folder: Path) -> None:
        """Run the method (or read the scored files); write its artifacts into ``folder`` (a staging folder)."""

    @abstractmethod
    def score(self) -> None:
        """Score what :meth:`run_method` produced."""

    @abstractmethod
    def run_name(self) -> str:
        """The run's folder name under ``<output-dir>/<task>/<model>/`` (asked once the run is scored)."""

    @abstractmethod
    def model_info(self, loaded: Any) -> ModelInfo:
        """The record's model block."""

    @abstractmethod
    def record(self, header: dict[str, Any], model: ModelInfo) -> RecordT:
        """The track's record from the shared ``header`` fields."""

    @abstractmethod
    def plot(self, record: RecordT, folder: Path) -> None:
        """Draw the track's plots into ``folder``, listing them in ``record.artifacts``."""


def run_track(track: Track[RequestT, RecordT]) -> RunResult[RecordT]:
    """Run ``track``'s steps in order and publish its folder; nothing is published if any step fails."""
    request, timer = track.request, track.timer
    track.resolve()
    with timer.phase("load_model"):
        log.debug("loading model %s", request.model)
        loaded = load_run_model(request)
    with timer.phase("load_data"):
        track.build_data(loaded)
    with staged_folder(Path(request.output_dir)) as staging:
        track.run_method(staging)
        track.score()
        model = track.model_info(loaded)
        record = track.record(record_header(request, model, timer), model)
        with timer.phase("plot"):
            track.plot(record, staging)
        record.timings.update(timer.seconds)
        write_record(record, staging / RECORD_NAME)
        final = run_folder(request, track.card.id, track.run_name())
        publish(staging, final)
    log.debug("timings: %s", ", ".join(f"{k} {v:.1f} s" for k, v in timer.seconds.items()))
    return RunResult(record, final, final / RECORD_NAME)


def load_run_model(request: RunRequest):
    """The request's model with its tokenizer (the caller's own when it passed one); a model without a
    tokenizer cannot encode task prompts."""
    loaded = request.preloaded if request.preloaded is not None else _load_quietly(request)
    if loaded.tokenizer is None:
        raise MibenchError(f"model {request.model!r} has no tokenizer; mibench needs one to encode task prompts")
    return loaded


def _load_quietly(request: RunRequest):
    """Load ``request.model``, without transformers' progress bars unless the run shows its own."""
    from transformers.utils import logging as hf_logging

    from mibench.models.loading import load_model

    bars = hf_logging.is_progress_bar_enabled()
    if not shows_progress(request):  # no "Loading weights" bar from transformers either
        hf_logging.disable_progress_bar()
    try:
        return load_model(request.model, dtype=request.dtype, device=request.device, revision=request.revision)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
