"""Pricing cost per call of the n-outcome LMSR (engine/pricing_n.py) for 2, 4 and 16 outcomes.

Pure CPU, no services: ``.venv/bin/python -m bench.pricing_n_runs``
(about 20 s). Prints µs per call of ``buy_cost_n``, ``sell_proceeds_n``,
``shares_for_amount_n`` and ``prices_n`` on typical states (the seed workload's
market: b = 1,000 units, totals within a few b of each other, 10–100 whole
shares or 10–100 units of money), the best of five passes over 2,000 fixed
random inputs, and how often the exact decimal path was needed, there and over
the whole allowed range (b from 1 to 1e9 units, imbalances to 100 b and to
9e9 units, trades from 1 micro-share to 1e9 units).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import ModuleType

from predmarket.engine import pricing, pricing_n
from predmarket.engine.units import MAX_QUANTITY, MAX_TOTAL, MICRO

Case = tuple[list[int], int, int, int]  # (q, k, shares or amount, b)


def typical_cases(rng: random.Random, n: int, count: int) -> list[Case]:
    b = 1_000 * MICRO
    cases = []
    for _ in range(count):
        q = [rng.randint(0, 5_000) * MICRO for _ in range(n)]
        k = rng.randrange(n)
        cases.append((q, k, rng.randint(10, 100) * MICRO, b))
    return cases


def scaled_cases(rng: random.Random, n: int, count: int, b_units: int) -> list[Case]:
    """Liquidity ``b_units``, totals within 20 b of each other, trades from 1 micro-share to 10 b."""
    b = b_units * MICRO
    cases = []
    for _ in range(count):
        q = [min(int(b * rng.uniform(0, 20)), MAX_TOTAL - MAX_QUANTITY) for _ in range(n)]
        top = min(10 * b, MAX_QUANTITY)
        cases.append((q, rng.randrange(n), max(1, int(10 ** rng.uniform(0, math.log10(top)))), b))
    return cases


def extreme_cases(rng: random.Random, n: int, count: int) -> list[Case]:
    """Any b, totals anywhere up to 9e9 units (imbalances of thousands of b), trades of any size."""
    cases = []
    for _ in range(count):
        b = int(MICRO * 10 ** rng.uniform(0, 9))
        q = [int(10 ** rng.uniform(0, math.log10(MAX_TOTAL - MAX_QUANTITY))) for _ in range(n)]
        cases.append((q, rng.randrange(n), max(1, int(10 ** rng.uniform(0, 15))), b))
    return cases


@dataclass
class Counter:
    """Counts calls into a module function it stands in for (the decimal paths' entry points)."""

    calls: int = 0

    def wrap(self, module: ModuleType, name: str) -> Callable[[], None]:
        original = getattr(module, name)

        def counted(*args: object) -> object:
            self.calls += 1
            return original(*args)

        setattr(module, name, counted)
        return lambda: setattr(module, name, original)


def per_call_us(call: Callable[[Case], object], cases: Sequence[Case], passes: int = 5) -> float:
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for case in cases:
            call(case)
        best = min(best, time.perf_counter() - start)
    return best / len(cases) * 1e6


def decimal_share(call: Callable[[Case], object], cases: Sequence[Case]) -> tuple[int, int]:
    """(decimal-path entries, cost evaluations) over ``cases``: both paths' entry points and cost cores counted."""
    decimal, costs = Counter(), Counter()
    restore = [
        decimal.wrap(pricing_n, "_integer_delta"),
        decimal.wrap(pricing, "_delta_decimal"),
        costs.wrap(pricing_n, "_delta_float"),
        costs.wrap(pricing, "_delta_float"),
    ]
    try:
        for case in cases:
            call(case)
    finally:
        for undo in restore:
            undo()
    return decimal.calls, costs.calls


def buy(case: Case) -> object:
    q, k, shares, b = case
    return pricing_n.buy_cost_n(q, k, shares, b)


def sell(case: Case) -> object:
    q, k, shares, b = case
    return pricing_n.sell_proceeds_n(q, k, min(shares, q[k]), b) if q[k] else 0


def by_amount(case: Case) -> object:
    q, k, amount, b = case
    return pricing_n.shares_for_amount_n(q, k, amount, b, MAX_QUANTITY + 1)


def prices(case: Case) -> object:
    return pricing_n.prices_n(case[0], case[3])


def general_buy(case: Case) -> object:
    q, k, shares, b = case
    return pricing_n._buy_cost_general(q, k, shares, b)


def general_by_amount(case: Case) -> object:
    q, k, amount, b = case
    return pricing_n._shares_for_amount_general(q, k, amount, b, MAX_QUANTITY + 1)


CALLS: list[tuple[str, Callable[[Case], object]]] = [
    ("buy_cost_n", buy),
    ("sell_proceeds_n", sell),
    ("shares_for_amount_n", by_amount),
    ("prices_n", prices),
]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=2_000, help="random inputs per figure")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    print(f"µs per call, best of 5 passes over {args.count} inputs; decimal = share of cost evaluations"
          " that took the exact decimal path")
    print(f"{'call':<34}{'n=2':>10}{'n=4':>10}{'n=16':>10}")
    typical = {n: typical_cases(rng, n, args.count) for n in (2, 4, 16)}
    rows = [*CALLS, ("  general path, buy", general_buy), ("  general path, by amount", general_by_amount)]
    for name, call in rows:
        print(f"{name:<34}" + "".join(f"{per_call_us(call, typical[n], 5):>10.2f}" for n in (2, 4, 16)))
    saved = pricing_n._REL, pricing_n._REL_SMALL, pricing._REL
    pricing_n._REL = pricing_n._REL_SMALL = pricing._REL = 1.0  # no float interval decides: all decimals
    try:
        for name, call in (("  decimal path, buy", buy), ("  decimal path, by amount", by_amount)):
            print(f"{name:<34}" + "".join(f"{per_call_us(call, typical[n][:200], 1):>10.2f}" for n in (2, 4, 16)))
    finally:
        pricing_n._REL, pricing_n._REL_SMALL, pricing._REL = saved
    evaluations = {n: decimal_share(by_amount, typical[n])[1] / len(typical[n]) for n in (2, 4, 16)}
    print(f"{'costs per shares_for_amount_n':<34}" + "".join(f"{evaluations[n]:>10.1f}" for n in (2, 4, 16)))
    print("share of buy_cost_n calls that took the decimal path:")
    sets: list[tuple[str, Callable[[int], list[Case]]]] = [("typical (b = 1,000 units)", lambda n: typical[n])]
    for b_units in (1, 1_000, 1_000_000, 1_000_000_000):
        sets.append((f"b = {b_units:,} units, within 20 b", partial(scaled_cases, rng, count=args.count,
                                                                  b_units=b_units)))
    sets.append(("anywhere up to 9e9 units", partial(extreme_cases, rng, count=args.count)))
    for label, make in sets:
        cells = []
        for n in (2, 4, 16):
            decimals, costs = decimal_share(buy, make(n))
            cells.append(f"{decimals / max(costs, 1):>10.2%}")
        print(f"{'  ' + label:<34}" + "".join(cells))


if __name__ == "__main__":
    main()
