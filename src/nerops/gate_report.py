"""The gate's result as a person reads it: markdown summary and a per-label table (for Prefect artifacts)."""

from __future__ import annotations

from nerops.data import LABELS


def gate_markdown(gate: dict) -> str:
    """Challenger against champion: verdict, reasons, the checks with values and thresholds."""
    ch, champ = gate["challenger"], gate.get("champion")
    verdict = "PASSED" if gate["passed"] else "FAILED"
    lines = [
        f"# Gate: v{ch['version']} {verdict}",
        "",
        gate["summary"],
        "",
        f"Fixed test set: {gate['test_set']['documents']} CVs (sha256 `{gate['test_set']['sha256'][:12]}…`).",
        "",
        "| | challenger | champion |",
        "|---|---|---|",
        f"| version | v{ch['version']} | {'v' + champ['version'] if champ else '(none yet)'} |",
        f"| micro F1 (95 % CI) | {_f1(ch)} | {_f1(champ) if champ else '-'} |",
        f"| precision / recall | {ch['micro']['precision']:.3f} / {ch['micro']['recall']:.3f} | "
        + (f"{champ['micro']['precision']:.3f} / {champ['micro']['recall']:.3f} |" if champ else "- |"),
        f"| median latency per CV | {ch['median_latency_ms']:.1f} ms | "
        + (f"{champ['median_latency_ms']:.1f} ms |" if champ else "- |"),
    ]
    if gate.get("f1_diff") is not None:
        low, high = gate["f1_diff_ci95"]
        lines += ["", f"Paired F1 difference: **{gate['f1_diff']:+.3f}** (95 % CI {low:+.3f} to {high:+.3f})."]
    lines += ["", "## Checks", "", "| check | result | value | threshold | |", "|---|---|---|---|---|"]
    for check in gate["checks"]:
        value = "" if check["value"] is None else f"{check['value']:.3f}"
        threshold = "" if check["threshold"] is None else f"{check['threshold']:.3f}"
        mark = "pass" if check["passed"] else "**FAIL**"
        lines.append(f"| {check['name']} | {mark} | {value} | {threshold} | {check['message']} |")
    return "\n".join(lines) + "\n"


def gate_label_table(gate: dict) -> list[dict[str, object]]:
    """One row per label: challenger F1, champion F1, difference, the minimum the gate asks."""
    ch, champ = gate["challenger"], gate.get("champion")
    policy = gate["policy"]
    rows = []
    for label in LABELS:
        mine = ch["per_label_f1"][label]
        theirs = champ["per_label_f1"][label] if champ else None
        rows.append(
            {
                "label": label,
                "challenger_f1": round(mine, 3),
                "champion_f1": None if theirs is None else round(theirs, 3),
                "difference": None if theirs is None else round(mine - theirs, 3),
                "minimum": policy["min_label_f1"].get(label, policy["default_min_label_f1"]),
            }
        )
    return rows


def _f1(model: dict) -> str:
    low, high = model["micro"]["f1_ci95"]
    return f"{model['micro']['f1']:.3f} ({low:.3f}-{high:.3f})"
