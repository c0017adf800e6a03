"""Options shared by the commands that run a model (``evaluate``, ``score``, ``submission evaluate``), and
the translation of parsed options into pipeline requests. Torch-free: argument parsing stays fast."""

from __future__ import annotations

import argparse
import sys

from mibench.errors import MibenchError

LEVELS = ("edge", "node", "neuron")
ABLATIONS = ("patching", "mean", "zero", "optimal")
SPLITS = ("train", "validation", "test", "private_test")
#: --dtype choices; the loader also accepts the aliases fp32, fp16 and bf16.
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "fp32", "fp16", "bf16")
#: Output formats of a run's summary: tabulate table formats, or one JSON object for scripts.
JSON_FORMAT = "json"


def default_model() -> str:
    """The embedded zoo model every command uses when ``--model`` is not given."""
    from mibench.zoo.catalog import DEFAULT_MODEL

    return DEFAULT_MODEL


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type for counts that must be at least 1 (batch sizes, example counts)."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type for counts where 0 means "none" (bootstrap replicates)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def dtype_name(text: str) -> str:
    """--dtype: checked by name here, so a typo fails before a model is loaded."""
    if text.lower() not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}; choose one of {', '.join(DTYPE_NAMES[:4])}")
    return text.lower()


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def str_list(text: str) -> list[str]:
    return [x for x in text.replace(" ", "").split(",") if x]


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 32) -> None:
    """The options every model-running command shares (evaluation split, seeds, device, output)."""
    parser.add_argument("--split", default="test", choices=SPLITS, help="evaluation split (default: test)")
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="evaluate on the first N examples only (records are not leaderboard-eligible)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random scores and the bootstrap (default: 0)")
    parser.add_argument("--bootstrap", type=non_negative_int, default=1000, metavar="N",
                        help="bootstrap replicates for standard errors (default: 1000; 0 turns them off)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size, metavar="N",
                        help=f"examples per forward (default: {batch_size})")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1, mps, or auto (CUDA "
                        "when a GPU is visible, else MPS, else cpu) (default: cpu)")
    parser.add_argument("--dtype", type=dtype_name, metavar="DTYPE",
                        help="model dtype: float32, bfloat16, float16, float64 (default: the device's: float32 on "
                        "CPU and MPS, bfloat16 on CUDA, float16 on GPUs without bfloat16)")
    parser.add_argument("--output-dir", default="results", help="where records go (default: ./results)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task id (see 'mibench ls tasks'), e.g. ioi")
    parser.add_argument("--model", help="embedded model name (see 'mibench ls models'), local HF model folder, or "
                        "HF hub id (default: the embedded GPT-2-architecture zoo model)")
    parser.add_argument("--revision", help="hub revision of --model (recorded in the results)")
    parser.add_argument("--counterfactual", help="counterfactual kind (default: the task card's; with --data "
                        "official, any <kind>_counterfactual column of the dataset)")
    add_data_arguments(parser)
    add_run_arguments(parser)
    parser.add_argument("--no-baseline", action="store_true", help="skip the random baseline curve")
    parser.add_argument("--format", default="simple", metavar="FORMAT",
                        help="summary format: a tabulate table format (simple, github, latex, ...) or 'json' "
                        "(one JSON object on stdout, for scripts)")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the examples come from: generated (default) or MIB's official datasets (hub or a local copy)."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", choices=("procedural", "official"), default="procedural",
                       help="procedural: mibench's generated examples (default, offline); official: the task "
                       "card's mib-bench/* dataset on the Hugging Face hub, or the copy under --data-dir")
    group.add_argument("--data-dir", metavar="DIR", help="offline copy of the official data: DIR/<task>/<split>.jsonl "
                       "(or .json/.parquet); DIR/<task>/<config>/<split>.jsonl for another --data-config")
    group.add_argument("--data-config", metavar="NAME", help="dataset config, e.g. MCQA's 2_answer_choices "
                       "(default: the task card's)")
    group.add_argument("--data-revision", metavar="REV", help="hub revision of the dataset (default: the card's)")


def data_fields(args: argparse.Namespace) -> dict:
    """The request fields of :func:`add_data_arguments`."""
    return {"data": args.data, "data_dir": args.data_dir, "data_config": args.data_config,
            "data_revision": args.data_revision}


def add_causal_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("causal track (--track causal)")
    group.add_argument("--variable", help="causal variable to localise, e.g. answer_pointer (see 'mibench ls tasks')")
    group.add_argument("--layers", type=int_list, metavar="L,L,...",
                       help="layers to intervene at (residual stream after each block; default: all)")
    group.add_argument("--positions", type=str_list, metavar="ROLE,...",
                       help="token roles to intervene at (default: the task card's causal positions)")
    group.add_argument("--train-examples", type=positive_int, default=400, metavar="N",
                       help="train-split examples per counterfactual kind for fitting and training (default: 400)")
    group.add_argument("--sae-dir", help="SAELens-layout folder with layer_<L>/ SAEs (sae, dbm-sae on hub models)")
    group.add_argument("--no-featurizers", action="store_true",
                       help="do not write the trained featurizers beside the record (e.g. published records)")


def invocation() -> list[str]:
    """The command line as typed, recorded in every record."""
    return ["mibench", *sys.argv[1:]]


def progress(args: argparse.Namespace) -> bool | None:
    """Progress bars: off with --quiet, else only when stderr is a terminal."""
    return False if getattr(args, "quiet", False) else None


def circuit_request(args: argparse.Namespace, *, command_line: list[str] | None = None, **extra):
    """A circuit-track request from ``evaluate``/``score`` options (``command_line``: what the record names
    as its invocation, by default this process's command line)."""
    from mibench.pipeline import EvaluationRequest

    return EvaluationRequest(
        task=args.task, model=args.model or default_model(), revision=args.revision, split=args.split,
        counterfactual=args.counterfactual, batch_size=args.batch_size, limit=args.limit, seed=args.seed,
        bootstrap=args.bootstrap, baseline=not args.no_baseline, device=args.device, dtype=args.dtype,
        output_dir=args.output_dir, level=args.level, progress=progress(args),
        invocation=command_line or invocation(), **data_fields(args), **extra,
    )


def causal_request(args: argparse.Namespace, *, command_line: list[str] | None = None, **extra):
    """A causal-track request from ``evaluate --track causal`` / ``score --track causal`` options."""
    from mibench.pipeline import CausalRequest

    if not args.variable:
        raise MibenchError("--track causal needs --variable (see 'mibench ls tasks' for each task's variables)")
    return CausalRequest(
        task=args.task, model=args.model or default_model(), variable=args.variable, layers=args.layers,
        positions=args.positions, split=args.split, limit=args.limit, train_examples=args.train_examples,
        batch_size=args.batch_size, seed=args.seed, bootstrap=args.bootstrap, device=args.device, dtype=args.dtype,
        revision=args.revision, sae_dir=args.sae_dir, output_dir=args.output_dir,
        save_featurizers=not args.no_featurizers, progress=progress(args),
        invocation=command_line or invocation(), **data_fields(args), **extra,
    )
