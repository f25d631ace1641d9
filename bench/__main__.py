"""Run every benchmark: ``python -m bench [name ...]``."""

from __future__ import annotations

import sys

from bench import alert_queries, quality, serving

BENCHMARKS = {"quality": quality.main, "serving": serving.main, "alert_queries": alert_queries.main}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}: choose from {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
