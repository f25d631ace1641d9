"""``python -m nerops.training_job``: train with the code of this checkout; run by :func:`nerops.source.train_at`
in a worktree of the asked-for commit. It refuses before training when the code it imported is not at that commit,
and writes the training result (with ``git_commit`` and ``requested_commit``) as JSON to ``--result``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nerops
from nerops.registry.lineage import git_commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nerops.training_job", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--commit", required=True, help="The commit asked for: refuse unless the code is at it.")
    parser.add_argument("--overrides", default="{}", help="Config overrides as JSON.")
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--actor", default=None)
    args = parser.parse_args(argv)
    code = Path(nerops.__file__).resolve().parent
    trained = git_commit(code)
    if trained != args.commit:
        print(f"refused: asked for commit {args.commit} but the code at {code} is at {trained}", file=sys.stderr)
        return 3
    from nerops import lifecycle

    source = {"requested_commit": args.commit, "git_commit": trained}
    result = lifecycle.train_candidate(args.config, json.loads(args.overrides), actor=args.actor, source=source)
    args.result.write_text(json.dumps({**result, **source}, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
