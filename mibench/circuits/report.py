"""What a person reads after a run: the summary tables and the faithfulness plot."""

from __future__ import annotations

from pathlib import Path

from mibench.results.record import CircuitRecord


def _num(value: float) -> str:
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _pm(value: float, stderr: float | None) -> str:
    return f"{value:.3f}" if stderr is None else f"{value:.3f} ± {stderr:.3f}"


def summary_table(record: CircuitRecord, table_format: str = "simple") -> str:
    """One row: the headline numbers of the run, with the random baseline's CMD beside them."""
    from tabulate import tabulate

    from mibench.circuits.areas import cmd, cpr

    m = record.metrics
    row = {
        "method": record.method.id,
        "task": f"{record.task.id} ({record.task.split}, n={record.task.n_examples})",
        "model": Path(record.model.id).name,
        "level": record.method.level,
        "CPR ↑": _pm(m.cpr, m.cpr_stderr),
        "CMD ↓": _pm(m.cmd, m.cmd_stderr),
    }
    if m.baseline is not None:
        import numpy as np

        f = np.asarray(m.baseline.faithfulness)
        row["random CPR / CMD"] = f"{float(cpr(f)):.3f} / {float(cmd(f)):.3f}"
    if m.ground_truth is not None:
        row["AUROC ↑ (10 sizes / all)"] = f"{m.ground_truth.auroc:.3f} / {m.ground_truth.auroc_full:.3f}"
    row["time (s)"] = f"{sum(record.timings.values()):.1f}"
    return tabulate([row], headers="keys", tablefmt=table_format)


def curve_table(record: CircuitRecord, table_format: str = "simple") -> str:
    """Faithfulness at each size for both rankings (and the random baseline)."""
    from tabulate import tabulate

    m = record.metrics
    rows = []
    for i, fraction in enumerate(m.signed.fractions):
        row = {
            "size %": f"{100 * fraction:g}",
            "items": m.signed.nominal_sizes[i],
            "edges (signed)": f"{m.signed.edge_counts[i]:g}",
            "f signed": _num(m.signed.faithfulness[i]),
            "edges (abs)": f"{m.absolute.edge_counts[i]:g}",
            "f abs": _num(m.absolute.faithfulness[i]),
        }
        if m.baseline is not None:
            row["f random"] = _num(m.baseline.faithfulness[i])
        rows.append(row)
    return tabulate(rows, headers="keys", tablefmt=table_format, disable_numparse=True, stralign="right")


def plot_faithfulness(record: CircuitRecord, path: str | Path) -> bool:
    """Faithfulness vs circuit size (log-x) for the method's two rankings and the random baseline.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    from mibench.plotting import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return False

    m = record.metrics
    x = [100 * f for f in m.signed.fractions]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.plot(x, m.signed.faithfulness, marker="o", label=f"{record.method.id}, signed (CPR {m.cpr:.2f})")
    ax.plot(x, m.absolute.faithfulness, marker="s", label=f"{record.method.id}, |score| (CMD {m.cmd:.2f})")
    if m.baseline is not None:
        ax.plot(x, m.baseline.faithfulness, marker=".", color="0.45", label="random baseline")
    ax.set_xscale("log")
    ax.set_xlabel(f"circuit size (% of {m.n_items} {record.method.level}s)")
    ax.set_ylabel("faithfulness")
    ax.set_title(f"{record.task.id} · {Path(record.model.id).name} · {record.task.split}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    save_figure(fig, path)
    return True


def plot_roc(record: CircuitRecord, path: str | Path) -> bool:
    """The ROC of the method's edge (or node) scores against the model's known circuit: the full curve, and MIB's ten
    size points. False when matplotlib is missing or the record has no ground truth."""
    truth = record.metrics.ground_truth
    if truth is None:
        return False
    from mibench.plotting import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return False

    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance")
    ax.plot(truth.curve_fpr, truth.curve_tpr, label=f"all thresholds (AUROC {truth.auroc_full:.2f})")
    ax.plot(truth.fpr, truth.tpr, marker="o", label=f"ten sizes, MIB (AUROC {truth.auroc:.2f})")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{record.method.id} · {record.task.id} · {Path(record.model.id).name}\n"
                 f"{truth.n_true} of {truth.n_edges} {truth.level}s are the known circuit", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)
    return True
