"""What a person reads after a causal-track run: the site table, the summary row and the IIA heatmap."""

from __future__ import annotations

from pathlib import Path

from mibench.results.causal_record import CausalRecord


def _pm(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if stderr is None else f"{value:.3f} ± {stderr:.3f}"


def site_table(record: CausalRecord, table_format: str = "simple") -> str:
    """IIA per layer (rows) and token role (columns); the best role of each layer is starred."""
    from tabulate import tabulate

    roles = record.task.positions
    by_site = {(s.layer, s.role): s for s in record.sites}
    best = {b.layer: b.role for b in record.metrics.per_layer}
    rows = []
    for layer in record.task.layers:
        row = {"layer": layer}
        for role in roles:
            site = by_site.get((layer, role))
            text = "missing" if site is None else f"{site.iia:.3f}" + ("*" if best.get(layer) == role else "")
            row[role] = text
        selected = [by_site[(layer, r)] for r in roles if (layer, r) in by_site]
        if selected:
            row["features kept"] = ", ".join(f"{s.n_selected}/{s.n_features}" for s in selected)
        rows.append(row)
    return tabulate(rows, headers="keys", tablefmt=table_format, disable_numparse=True, stralign="right")


def summary_table(record: CausalRecord, table_format: str = "simple") -> str:
    from tabulate import tabulate

    m = record.metrics
    pairs = ", ".join(f"{k} {n}" for k, n in record.task.test_pairs.items())
    row = {
        "method": record.method.id,
        "task / variable": f"{record.task.id} / {record.task.variable}",
        "model": Path(record.model.id).name,
        f"test pairs ({record.task.split})": pairs,
        "IIA average ↑": _pm(m.average, m.average_stderr),
        "IIA best ↑": _pm(m.best, m.best_stderr),
        "no-op floor": _pm(m.noop_iia, None),
        "time (s)": f"{sum(record.timings.values()):.1f}",
    }
    return tabulate([row], headers="keys", tablefmt=table_format, disable_numparse=True)


def plot_heatmap(record: CausalRecord, path: str | Path) -> bool:
    """IIA over layers (y) x token roles (x); missing sites are blank. False if matplotlib is absent."""
    import numpy as np

    from mibench.plotting import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return False

    roles, layers = record.task.positions, record.task.layers
    grid = np.full((len(layers), len(roles)), np.nan)
    for site in record.sites:
        if site.layer in layers and site.role in roles:
            grid[layers.index(site.layer), roles.index(site.role)] = site.iia
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(roles), 1.4 + 0.45 * len(layers)), dpi=120)
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto", origin="lower")
    for i in range(len(layers)):
        for j in range(len(roles)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(roles)), roles, rotation=20, fontsize=8)
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
    ax.set_xlabel("token position (role)")
    ax.set_ylabel("layer (residual after block)")
    m = record.metrics
    average = "-" if m.average is None else f"{m.average:.2f}"
    ax.set_title(f"{record.method.id} · {record.task.id}/{record.task.variable} · {Path(record.model.id).name}\n"
                 f"IIA average {average}, best {m.best:.2f}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05, label="IIA")
    save_figure(fig, path)
    return True
