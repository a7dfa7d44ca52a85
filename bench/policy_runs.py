"""The sequencer's batch policy: the engine workload (1 process, 32 tasks) under each choice.

Each policy is a set of engine settings (``PM_PIPELINE_DEPTH``,
``PM_SPLIT_FROM``, ``PM_MAX_BATCH``); the defaults are the first row, the one
the rest are compared with. Same workload and clock as the engine section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from predmarket.engine.settings import Settings

from bench.engine_runs import run_plan
from bench.invariants import check_redis
from bench.options import Sizes
from bench.results import ENGINE, Row
from bench.scratch import scratch_prefix
from predmarket.simulate import Plan

#: (name, engine settings); the first is the default policy.
POLICIES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("default: 2 calls in flight, split from 8, batch 64", {}),
    ("1 call in flight (no pipelining)", {"pipeline_depth": 1}),
    ("3 calls in flight", {"pipeline_depth": 3}),
    ("never split a market's queue", {"split_from": 10_000}),
    ("batch at most 16 orders", {"max_batch": 16}),
    ("batch at most 256 orders", {"max_batch": 256}),
)
POLICY_TASKS = 32


@dataclass
class PolicyRow:
    policy: str
    row: Row

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, **self.row.to_dict()}


def policy_section(settings: Settings, sizes: Sizes, say: Callable[[str], None],
                   seed: int | None) -> list[PolicyRow]:
    rows = []
    for name, changes in POLICIES:
        for markets in sizes.engine_markets:
            plan = Plan(markets=markets, users=sizes.users, trades=sizes.trades_for(POLICY_TASKS),
                        concurrency=POLICY_TASKS, processes=1, seed=seed)
            with scratch_prefix(settings, "policy") as scoped:
                summary = run_plan(scoped.model_copy(update=changes), plan)
                check_redis(scoped, f"policy {name}, {markets} market(s)")
            row = Row(ENGINE, 1, markets, POLICY_TASKS, summary.trades, summary.elapsed_s, summary.p50_ms,
                      summary.p99_ms, summary.retries_per_trade, summary.rejected)
            rows.append(PolicyRow(name, row))
            say(f"policy {name}, {row.where}: {row.trades_per_s:,.0f}/s, p50 {row.p50_ms:.2f} ms, "
                f"p99 {row.p99_ms:.2f} ms, {summary.trades / max(summary.script_calls, 1):.1f} trades/script "
                "call; invariants hold")
    return rows
