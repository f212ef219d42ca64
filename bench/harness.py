"""Side-by-side measurement: interleaved rounds, median rates, ratios within each round.

The machine is noisy (2 vCPUs shared with everything else), so absolute rates drift between runs.
Each round runs every case for about the same wall time, one after the other; a ratio is taken
inside each round and the median over rounds is reported, so drift hits both sides of a ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass
class Result:
    """Median rate (operations per second) of each case, and every round's rates."""

    rates: dict[str, float]
    rounds: list[dict[str, float]]

    def ratio(self, case: str, baseline: str) -> float:
        """Median over rounds of rate(case) / rate(baseline)."""
        return statistics.median(r[case] / r[baseline] for r in self.rounds)


def _calibrate(fn: Callable[[], object], seconds: float) -> int:
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds / 4:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def measure(
    cases: Mapping[str, Callable[[], object]],
    rounds: int = 7,
    seconds: float = 0.3,
    ops_per_call: Mapping[str, int] | None = None,
) -> Result:
    """Run every case ``rounds`` times, interleaved; each run lasts about ``seconds``."""
    counts = {name: _calibrate(fn, seconds) for name, fn in cases.items()}
    per_call = ops_per_call or {}
    history: list[dict[str, float]] = []
    for _ in range(rounds):
        this: dict[str, float] = {}
        for name, fn in cases.items():
            n = counts[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            elapsed = time.perf_counter() - start
            this[name] = n * per_call.get(name, 1) / elapsed
        history.append(this)
    rates = {name: statistics.median(r[name] for r in history) for name in cases}
    return Result(rates, history)


def print_table(title: str, result: Result, unit: str = "op/s") -> None:
    """Print each case's median rate and its spread over rounds."""
    print(title)
    width = max(len(n) for n in result.rates)
    for name, rate in result.rates.items():
        lo = min(r[name] for r in result.rounds)
        hi = max(r[name] for r in result.rounds)
        print(f"  {name:<{width}}  {rate:>12,.0f} {unit}   (rounds {lo:,.0f} .. {hi:,.0f})")


def print_ratios(result: Result, pairs: Sequence[tuple[str, str, float | None]]) -> bool:
    """Print ``case / baseline`` for each pair with its target; returns whether all are met."""
    ok = True
    for case, baseline, target in pairs:
        ratio = result.ratio(case, baseline)
        verdict = ""
        if target is not None:
            met = ratio >= target
            ok &= met
            verdict = f"  target >= {target:g}: {'met' if met else 'NOT MET'}"
        print(f"  {case} / {baseline} = {ratio:.2f}x{verdict}")
    return ok
