"""The engine's YES/NO rows against another install of predmarket: same machine, same run, by turns.

``predmarket bench --against PYTHON [--pairs N]``. PYTHON is the interpreter of another install
(a checkout of an earlier release with its own virtualenv, installed editable so it has its
bench). The engine section runs N times in each install, in pairs, each run a fresh
``predmarket bench --only engine`` process with the same seed, the order swapped every pair
(this, that, that, this, ...) so that a drift over the run favours neither. A row's figure is
the median of its paired ratios (this install's rate over the other's), and the geometric mean
of every ratio sums the section up.

Why pairs: on a shared 2-core machine a single row moves by ±10-20 % between identical runs
(docs/PERFORMANCE.md), so one run of each install cannot tell a 5 % difference from noise; the
performance target of issue 15 ("binary rows within 5 % of the release before, same run, same
machine") needs this.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from predmarket.engine.settings import Settings
from rich.console import Console
from rich.table import Table

from bench.replicas import service_env
from bench.results import ENGINE
from bench.runner import RESULTS_FILE

#: (processes, markets, tasks) of an engine row
RowKey = tuple[int, int, int]
#: A pair's ratio below this counts as "below" in the table (the issue's 5 %).
BELOW = 0.95
AGAINST_FILE = "bench-against.json"
#: One engine section, start to end, before its process counts as hung.
SECTION_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class RowComparison:
    processes: int
    markets: int
    tasks: int
    this_median: float  # trades/s: the median of this install's runs
    that_median: float
    median_ratio: float  # the median of the paired ratios (this / that); 1.0 = level
    geometric_ratio: float
    below: int  # pairs whose ratio is under BELOW
    pairs: int


@dataclass
class AgainstResult:
    python: str  # the other install's interpreter
    pairs: int
    rows: list[RowComparison]
    geometric_ratio: float  # over every row's every pair
    #: each pair's rates, (this, that), by "processes,markets,tasks"
    runs: list[tuple[dict[str, float], dict[str, float]]]


def engine_rates(results: Mapping[str, Any]) -> dict[RowKey, float]:
    """The YES/NO engine rows of a bench-results.json (releases before labels wrote no ``outcomes``)."""
    return {(row["processes"], row["markets"], row["concurrency"]): float(row["trades_per_s"])
            for row in results["rows"] if row["system"] == ENGINE and row.get("outcomes", 2) == 2}


def _geometric_mean(ratios: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(r) for r in ratios))


def compare(pairs: list[tuple[dict[RowKey, float], dict[RowKey, float]]]) -> list[RowComparison]:
    """Per row both installs measured in every pair: its medians, paired ratios and the pairs below BELOW."""
    if not pairs:
        return []
    common = set.intersection(*(set(this) & set(that) for this, that in pairs))
    out = []
    for key in sorted(common):
        ratios = [this[key] / that[key] for this, that in pairs]
        out.append(RowComparison(*key, statistics.median(this[key] for this, _ in pairs),
                                 statistics.median(that[key] for _, that in pairs), statistics.median(ratios),
                                 _geometric_mean(ratios), sum(r < BELOW for r in ratios), len(ratios)))
    return out


def run_engine_section(python: str, out: Path, env: Mapping[str, str], seed: int, quick: bool) -> dict[RowKey, float]:
    """One ``predmarket bench --only engine`` in the install of ``python``; its YES/NO rows' trades/s."""
    out.mkdir(parents=True, exist_ok=True)
    # -I (isolated): neither the working directory nor PYTHONPATH comes first on the path, so each
    # interpreter imports its own install's predmarket, not the checkout the command was started in.
    command = [python, "-I", "-m", "predmarket.cli", "bench", "--only", "engine", "--seed", str(seed),
               "--out", str(out), *(["--quick"] if quick else [])]
    log = out / "bench.log"
    with log.open("w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, cwd=out, env=dict(env),
                              timeout=SECTION_TIMEOUT_S, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{tail}")
    return engine_rates(json.loads((out / RESULTS_FILE).read_text()))


def _named(rates: dict[RowKey, float]) -> dict[str, float]:
    return {",".join(map(str, key)): rate for key, rate in rates.items()}


def against_section(settings: Settings, python: str, pairs: int, seed: int, quick: bool, out: Path | None,
                    say: Callable[[str], None]) -> AgainstResult:
    """``pairs`` engine sections in each install by turns; the per-row comparison (written to ``out``)."""
    if pairs < 1:
        raise ValueError("--pairs must be at least 1")
    # Both installs bench the same Redis and PostgreSQL, under this run's key prefix.
    env = service_env(settings.redis_url, settings.database_url, settings.key_prefix)
    measured: list[tuple[dict[RowKey, float], dict[RowKey, float]]] = []
    with tempfile.TemporaryDirectory(prefix="predmarket-against-") as scratch:
        runs_dir = out if out is not None else Path(scratch)
        for pair in range(1, pairs + 1):
            order = [("this", sys.executable), ("that", python)]
            if pair % 2 == 0:
                order.reverse()
            rates: dict[str, dict[RowKey, float]] = {}
            for name, interpreter in order:
                rates[name] = run_engine_section(interpreter, runs_dir / f"{name}-{pair}", env, seed, quick)
                say(f"pair {pair} of {pairs}, {name} install: " + ", ".join(
                    f"{p}/{m}/{t} {rate:,.0f}" for (p, m, t), rate in sorted(rates[name].items())))
            measured.append((rates["this"], rates["that"]))
    rows = compare(measured)
    # Every row has one ratio per pair, so the mean over all ratios is the mean of the rows' means.
    result = AgainstResult(python, pairs, rows, _geometric_mean([r.geometric_ratio for r in rows]) if rows else 1.0,
                           [(_named(this), _named(that)) for this, that in measured])
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / AGAINST_FILE).write_text(json.dumps(asdict(result), indent=1))
    return result


def print_against(console: Console, result: AgainstResult) -> None:
    table = Table(title=f"engine, YES/NO rows: this install against {result.python}, {result.pairs} pair(s) "
                        "(medians; ratio = this / that)")
    for column in ("processes", "markets", "tasks", "this trades/s", "that trades/s", "median of the paired ratios",
                   "geometric mean", f"pairs below {BELOW - 1:+.0%}"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(str(row.processes), str(row.markets), str(row.tasks), f"{row.this_median:,.0f}",
                      f"{row.that_median:,.0f}", f"{row.median_ratio - 1:+.1%}", f"{row.geometric_ratio - 1:+.1%}",
                      f"{row.below} of {row.pairs}")
    console.print(table)
    console.print(f"geometric mean of every paired ratio: {result.geometric_ratio - 1:+.1%}")
