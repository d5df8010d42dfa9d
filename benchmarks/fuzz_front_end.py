"""Long fuzz run of the front end (issue 17): annotation parsers, CLI argument checks, image files.

Runs every target of ``tests/trust/fuzz_targets.py`` with hypothesis for a share of the time
budget, counts the inputs tried and reports any exception that is not one of the project's
named errors (hypothesis shrinks it to a minimal example first).

    python benchmarks/fuzz_front_end.py --minutes 5 [--targets geojson csv image]

Prints one line per target (executions, failures) and a JSON summary at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.trust.fuzz_targets import TARGETS  # noqa: E402


def fuzz(name: str, seconds: float, seed: int) -> dict:
    """Fuzz one target until ``seconds`` have passed; returns executions and failures."""
    check, strategy = TARGETS[name]
    count = [0]

    def counted(value) -> None:
        count[0] += 1
        check(value)

    failures, start, rounds = [], time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        run = settings(max_examples=500, deadline=None, database=None, derandomize=False,
                       suppress_health_check=list(HealthCheck), print_blob=True)(given(strategy)(counted))
        rounds += 1
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - every finding is reported, then fuzzing goes on
            failures.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"[:3000])
    return {"target": name, "executions": count[0], "seconds": round(time.perf_counter() - start, 1),
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="total time budget (default 5)")
    parser.add_argument("--targets", nargs="+", default=sorted(TARGETS), choices=sorted(TARGETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    share = 60.0 * args.minutes / len(args.targets)
    results = []
    for name in args.targets:
        result = fuzz(name, share, args.seed)
        results.append(result)
        print(f"{name:14s} {result['executions']:7d} executions in {result['seconds']:6.1f} s, "
              f"{len(result['failures'])} failure(s)", flush=True)
        for failure in result["failures"]:
            print("  " + failure.replace("\n", "\n  "), flush=True)
    print(json.dumps({"executions": sum(r["executions"] for r in results),
                      "failures": sum(len(r["failures"]) for r in results),
                      "per_target": {r["target"]: r["executions"] for r in results}}))
    return 1 if any(r["failures"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
