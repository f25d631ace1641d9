"""Run every benchmark: ``python -m bench [name ...]``.

With no name, the benchmarks run; recorders (which measure once and write data that is committed,
such as ``documents``) run only when named.
"""

from __future__ import annotations

import sys

from bench import alert_queries, documents, quality, rollout_flows, rollouts, serving

BENCHMARKS = {
    "quality": quality.main,
    "serving": serving.main,
    "alert_queries": alert_queries.main,
    "rollouts": rollouts.main,
    "rollout_flows": rollout_flows.main,
}
RECORDERS = {"documents": documents.main}


def main(argv: list[str]) -> int:
    known = {**BENCHMARKS, **RECORDERS}
    names = argv or list(BENCHMARKS)
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown benchmark(s) {unknown}: choose from {sorted(known)}", file=sys.stderr)
        return 2
    for name in names:
        known[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
