"""The monitoring dashboard: one self-contained HTML page of plots, per deployment, with the ledger's marks.

System metrics (latency, resumes processed, error rate) and model signals (entities per resume,
empty-prediction rate, and shadow agreement when a mirror or probe pair compared answers) are drawn
in separate sections, as they are stored. Live traffic only, except the agreement (mirror, probe). Traffic changes,
deployments, promotions and rollbacks from the audit ledger are drawn as vertical marks on
every plot. Plots are inline SVG (matplotlib), so the page opens anywhere, offline.
"""

from __future__ import annotations

import html
import io
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from nerops.ledger import Entry  # noqa: E402
from nerops.telemetry import TelemetryStore  # noqa: E402

MARK_KINDS = {
    "traffic_change": "#1f77b4",
    "deployment_created": "#2ca02c",
    "deployment_deleted": "#7f7f7f",
    "promotion": "#9467bd",  # old entries: approval and champion change in one
    "approval": "#bcbd22",
    "champion_change": "#9467bd",
    "initial_deployment": "#9467bd",
    "rollback": "#d62728",
    "alert": "#ff7f0e",
}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


@dataclass(frozen=True)
class Mark:
    time: float
    kind: str
    text: str


def marks_from_ledger(entries: list[Entry], start: float, end: float) -> list[Mark]:
    """Ledger entries worth a vertical line: traffic, deployments, promotions, rollbacks, alerts."""
    marks = []
    for entry in entries:
        if entry.kind not in MARK_KINDS:
            continue
        at = datetime.fromisoformat(entry.time.replace("Z", "+00:00")).timestamp()
        if start <= at <= end:
            marks.append(Mark(at, entry.kind, _mark_text(entry)))
    return marks


def _mark_text(entry: Entry) -> str:
    if entry.kind == "traffic_change":
        after = entry.evidence.get("after", {}).get("traffic", {})
        return "traffic " + " / ".join(f"{k} {v}" for k, v in sorted(after.items())) if after else "traffic: none"
    if entry.kind.startswith("deployment_"):
        verb = entry.kind.split("_")[1]
        return f"{entry.subject.get('deployment')} {verb} (v{entry.subject.get('version')})"
    return f"{entry.kind} v{entry.subject.get('version', '?')}"


def _series(store: TelemetryStore, kind: str, metric: str, start: float, end: float, step: float, **kw):
    out: dict[str, list[tuple[float, object]]] = defaultdict(list)
    for point in store.metric_series(kind, metric, start, end, step, by="deployment", **kw):
        out[point.group].append((point.start + step, point.aggregate))
    return out


def _ratio(numerator, denominator) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for name, points in denominator.items():
        top = {t: agg.sum for t, agg in numerator.get(name, [])}
        out[name] = [(t, 100.0 * top.get(t, 0.0) / agg.sum) for t, agg in points if agg.sum]
    return out


def collect(store: TelemetryStore, start: float, end: float, step: float) -> dict[str, dict[str, list]]:
    """The plotted series, per deployment: ``{panel: {deployment: [(time, value), ...]}}``."""
    latency = _series(store, "system", "inference_latency_ms", start, end, step, buckets=True)
    requests = _series(store, "system", "request_count", start, end, step)
    server = _series(store, "system", "server_error_count", start, end, step)
    client = _series(store, "system", "client_error_count", start, end, step)
    documents = _series(store, "model", "document_count", start, end, step)
    entities = _series(store, "model", "entities_detected_count", start, end, step)
    empty = _series(store, "model", "empty_prediction_count", start, end, step)
    compared_classes = {"traffic": ("mirror", "probe")}  # shadow copies and probe pairs, never live
    compared = _series(store, "model", "agreement_documents", start, end, step, **compared_classes)
    exact = _series(store, "model", "agreement_exact_documents", start, end, step, **compared_classes)
    return {
        "latency_mean": {k: [(t, a.mean) for t, a in v if a.mean is not None] for k, v in latency.items()},
        "latency_p95": {k: [(t, a.p95) for t, a in v if a.p95 is not None] for k, v in latency.items()},
        "resumes": {k: [(t, a.sum) for t, a in v] for k, v in documents.items()},
        "requests": {k: [(t, a.sum) for t, a in v] for k, v in requests.items()},
        "server_error_rate": _ratio(server, requests),
        "client_error_rate": _ratio(client, requests),
        "entities_per_resume": {k: [(t, a.mean) for t, a in v if a.mean is not None] for k, v in entities.items()},
        "empty_rate": _ratio(empty, documents),
        "exact_agreement": _ratio(exact, compared),  # per candidate: documents answered exactly as the reference
    }


def _plot(
    title: str,
    ylabel: str,
    lines: list[tuple[str, list[tuple[float, float]], str]],
    marks: list[Mark],
    window: tuple[float, float],
) -> str:
    """One panel as inline SVG: a line per deployment (same colour on every panel), ledger marks."""
    fig, ax = plt.subplots(figsize=(9.5, 2.8), dpi=96)
    for name, points, style in lines:
        if not points:
            continue
        xs = [datetime.fromtimestamp(t, UTC) for t, _ in points]
        suffix = " p95" if style == "--" and "p95" in title else (" client" if style == "--" else "")
        ax.plot(xs, [v for _, v in points], style, color=_color(name), label=f"{name or '(unrouted)'}{suffix}",
                linewidth=1.6, marker="." if len(points) < 30 else None)  # fmt: skip
    last_text = -1e18
    for mark in marks:
        at = datetime.fromtimestamp(mark.time, UTC)
        ax.axvline(at, color=MARK_KINDS[mark.kind], linestyle=":", linewidth=1.2)
        if mark.time - last_text > (window[1] - window[0]) / 25:  # keep labels apart; the table lists all
            ax.annotate(mark.text, (at, 0.98), xycoords=("data", "axes fraction"), rotation=90, va="top",
                        ha="right", fontsize=7, color=MARK_KINDS[mark.kind])  # fmt: skip
            last_text = mark.time
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3)
    ax.set_xlim(datetime.fromtimestamp(window[0], UTC), datetime.fromtimestamp(window[1], UTC))
    locator = mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if window[1] - window[0] < 600 else "%H:%M", tz=UTC))
    ax.set_ylim(bottom=0)
    if any(points for _, points, _ in lines):
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no data in this window", transform=ax.transAxes, ha="center", color="#888")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


_PALETTE: dict[str, str] = {}


def _color(name: str) -> str:
    if not name:
        return "#999999"
    return _PALETTE.setdefault(name, COLORS[len(_PALETTE) % len(COLORS)])


def render(
    store: TelemetryStore,
    ledger_entries: list[Entry],
    *,
    endpoint: str,
    start: float,
    end: float,
    step: float | None = None,
    alerts_text: str | None = None,
) -> str:
    """The dashboard's HTML for the window ``(start, end]``."""
    span = store.time_range()
    if span is not None:  # fit the window to the data it holds, within what was asked
        start = max(start, span[0] - 30)
    step = step or max(5.0, (end - start) / 60)
    data = collect(store, start, end, step)
    window = (start, end)
    marks = marks_from_ledger(ledger_entries, start, end)

    def lines(panel: str, style: str = "-") -> list[tuple[str, list, str]]:
        return [(name, points, style) for name, points in sorted(data[panel].items())]

    panels = [
        ("System metrics", [
            _plot("Latency per request (mean solid, p95 dashed)", "ms",
                  lines("latency_mean") + lines("latency_p95", "--"), marks, window),
            _plot(f"Resumes processed per {step:.0f} s", "resumes", lines("resumes"), marks, window),
            _plot("Error rate (server errors solid, client errors dashed)", "% of requests",
                  lines("server_error_rate") + lines("client_error_rate", "--"), marks, window),
        ]),
        ("Model signals", [
            _plot("Entities per resume (mean)", "entities", lines("entities_per_resume"), marks, window),
            _plot("Empty-prediction rate", "% of resumes", lines("empty_rate"), marks, window),
        ]),
    ]  # fmt: skip
    if data["exact_agreement"]:  # only when a mirror or probe pair compared answers in this window
        panels[1][1].append(_plot("Shadow agreement: resumes answered exactly as the reference (mirror, probe)",
                                  "% of compared", lines("exact_agreement"), marks, window))  # fmt: skip
    when = lambda t: datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")  # noqa: E731
    totals = {name: sum(v for _, v in points) for name, points in data["requests"].items()}
    summary = (
        ", ".join(f"{name or '(unrouted)'}: {int(total)} requests" for name, total in sorted(totals.items()))
        or "no traffic"
    )
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>nerops dashboard: {html.escape(endpoint)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}"
        "h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 6px;border-bottom:1px solid #ddd}"
        ".meta{color:#555;font-size:13px}.plot svg{width:100%;height:auto}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #eee;"
        "text-align:left}pre{font-size:12px;background:#f7f7f7;padding:8px;overflow-x:auto}</style></head><body>",
        f"<h1>Endpoint <code>{html.escape(endpoint)}</code></h1>",
        f"<div class='meta'>{when(start)} to {when(end)}, steps of {step:.0f} s; {html.escape(summary)}. "
        f"Generated {when(time.time())}. Vertical marks come from the audit ledger.</div>",
    ]
    for heading, plots in panels:
        parts.append(f"<h2>{heading}</h2>")
        parts += [f"<div class='plot'>{svg}</div>" for svg in plots]
    if marks:
        parts.append("<h2>Ledger marks</h2><table><tr><th>time</th><th>kind</th><th>what</th></tr>")
        parts += [f"<tr><td>{when(m.time)}</td><td>{m.kind}</td><td>{html.escape(m.text)}</td></tr>" for m in marks]
        parts.append("</table>")
    if alerts_text:
        parts.append(f"<h2>Alert rules</h2><pre>{html.escape(alerts_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_dashboard(
    store_path: Path, ledger_entries: list[Entry], out: Path, *, endpoint: str, hours: float = 1.0,
    alerts_text: str | None = None,
) -> Path:  # fmt: skip
    end = time.time()
    with TelemetryStore(store_path) as store:
        page = render(
            store, ledger_entries, endpoint=endpoint, start=end - hours * 3600, end=end, alerts_text=alerts_text
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
