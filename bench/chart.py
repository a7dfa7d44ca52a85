"""The throughput-versus-concurrency chart (PNG), drawn from the run's own figures."""

from __future__ import annotations

from pathlib import Path

from bench.results import ENGINE, NAIVE_CAS, PG_ONLY, BenchResults

#: (system, processes, markets, label, colour, line style): a colour per system, solid for the hot market
SERIES = (
    (ENGINE, 1, 1, "engine, 1 hot market", "tab:blue", "-"),
    (ENGINE, 1, 100, "engine, 100 markets", "tab:blue", "--"),
    (ENGINE, 2, 1, "engine 2 procs, 1 hot market", "tab:cyan", "-"),
    (ENGINE, 2, 100, "engine 2 procs, 100 markets", "tab:cyan", "--"),
    (PG_ONLY, 1, 1, "PostgreSQL-only, 1 hot market", "tab:brown", "-"),
    (PG_ONLY, 1, 100, "PostgreSQL-only, 100 markets", "tab:brown", "--"),
    (NAIVE_CAS, 1, 1, "naive CAS, 1 hot market", "tab:red", "-"),
    (NAIVE_CAS, 1, 100, "naive CAS, 100 markets", "tab:red", "--"),
)


def write_chart(results: BenchResults, path: Path) -> str:
    """Draw the chart to ``path``; returns what was done (or why it was skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install 'predmarket[bench]')"
    fig, ax = plt.subplots(figsize=(9, 5.5))
    ticks: set[int] = set()
    for system, processes, markets, label, colour, style in SERIES:
        rows = sorted((r for r in results.rows if (r.system, r.processes, r.markets) == (system, processes, markets)),
                      key=lambda r: r.concurrency)
        if not rows:
            continue
        ticks.update(r.concurrency for r in rows)
        ax.plot([r.concurrency for r in rows], [r.trades_per_s for r in rows], linestyle=style, color=colour,
                marker="o", label=label)
    if not ticks:
        plt.close(fig)
        return "chart skipped: no engine or peer figures in this run"
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.set_xlabel("concurrent tasks per process")
    ax.set_ylabel("trades/s (log scale)")
    cpus = results.machine.get("cpus", "?")
    ax.set_title(f"predmarket bench: throughput vs concurrency ({cpus} CPUs, {results.started_at[:10]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"chart written to {path}"
