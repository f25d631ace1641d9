"""The monitoring dashboard: one self-contained HTML page of plots, per deployment, with the ledger's marks.

A "Rollout" section comes first: the share of live traffic per deployment over time (a step plot rebuilt
from the ledger's ``traffic_change`` entries, the mirrored share dashed) and the health judge's verdicts
as a timeline, one row per rollout, from the rollouts' evidence files. System metrics (latency, resumes
processed, error rate) and model signals (entities per resume, empty-prediction rate, and shadow
agreement when a mirror or probe pair compared answers) follow in separate sections, as they are stored.
Live traffic only, except the agreement (mirror, probe).

Ledger marks (traffic changes, deployments, promotions, rollbacks, rollout starts, decisions and ends)
are vertical lines on every plot; marks closer than 1/40 of the window are one line with one label
(:func:`cluster_marks`), and the table under the plots lists each. A series is cut where two points in a
row are more than 1.5 steps apart (:func:`split_gaps`): an endpoint that was down shows a gap, not a
straight line. Plots are inline SVG (matplotlib), so the page opens anywhere, offline.
"""

from __future__ import annotations

import html
import io
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from nerops.ledger import Entry  # noqa: E402
from nerops.telemetry import TelemetryStore  # noqa: E402

# by precedence: a cluster of marks takes the colour and the label of its first kind in this order
MARK_KINDS = {
    "rollback": "#d62728",
    "rollout_finished": "#e377c2",
    "champion_change": "#9467bd",
    "promotion": "#9467bd",  # old entries: approval and champion change in one
    "initial_deployment": "#9467bd",
    "approval": "#bcbd22",
    "alert": "#ff7f0e",
    "rollout_started": "#17becf",
    "deployment_created": "#2ca02c",
    "deployment_deleted": "#7f7f7f",
    "traffic_change": "#1f77b4",
    "rollout_decision": "#8c564b",
}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
# the judge's verdicts (DESIGN.md), and the readiness step's smoke verdicts in lighter shades
VERDICT_COLORS = {
    "healthy": "#43a047",
    "inconclusive": "#fbc02d",
    "no_data": "#9e9e9e",
    "error": "#6a1b9a",
    "unhealthy": "#e53935",
    "smoke healthy": "#a5d6a7",
    "smoke error": "#ce93d8",
    "smoke unhealthy": "#ef9a9a",
}
GAP_STEPS = 1.5  # points further apart than this many steps are not joined by a line
CLUSTER_SHARE = 1 / 40  # marks closer than this share of the window are drawn as one


@dataclass(frozen=True)
class Mark:
    time: float
    kind: str
    text: str


@dataclass(frozen=True)
class MarkCluster:
    """Marks drawn as one line at the first one's time, labelled by the one of highest precedence."""

    time: float
    kind: str
    text: str
    marks: tuple[Mark, ...]


def _at(entry: Entry) -> float:
    return datetime.fromisoformat(entry.time.replace("Z", "+00:00")).timestamp()


def _here(entry: Entry, endpoint: str | None) -> bool:
    """The entry is about this endpoint, or about no endpoint in particular (a champion, an approval)."""
    return endpoint is None or entry.subject.get("endpoint", endpoint) == endpoint


def marks_from_ledger(entries: list[Entry], start: float, end: float, endpoint: str | None = None) -> list[Mark]:
    """Ledger entries worth a vertical line: traffic, deployments, promotions, rollbacks, rollouts, alerts."""
    marks = []
    for entry in entries:
        if entry.kind not in MARK_KINDS or not _here(entry, endpoint):
            continue
        at = _at(entry)
        if start <= at <= end:
            marks.append(Mark(at, entry.kind, _mark_text(entry)))
    return marks


def _mark_text(entry: Entry) -> str:
    e, version = entry.evidence, entry.subject.get("version", "?")
    if entry.kind == "traffic_change":
        after = e.get("after", {}).get("traffic", {})
        return "traffic " + " / ".join(f"{k} {v}" for k, v in sorted(after.items())) if after else "traffic: none"
    if entry.kind.startswith("deployment_"):
        verb = entry.kind.split("_")[1]
        return f"{entry.subject.get('deployment')} {verb} (v{entry.subject.get('version')})"
    if entry.kind == "rollout_started":
        return f"rollout v{version} started"
    if entry.kind == "rollout_finished":
        return f"rollout v{version} {e.get('phase', 'ended')}"
    if entry.kind == "rollout_decision":
        text = " ".join(str(e.get("summary") or e.get("decision", "decision")).split())
        return text if len(text) <= 60 else text[:57] + "..."
    return f"{entry.kind} v{version}"


def cluster_marks(marks: Iterable[Mark], within: float) -> list[MarkCluster]:
    """Marks less than ``within`` after a cluster's first mark join it: one line and one label per cluster."""
    groups: list[list[Mark]] = []
    for mark in sorted(marks, key=lambda m: m.time):
        if groups and mark.time - groups[-1][0].time < within:
            groups[-1].append(mark)
        else:
            groups.append([mark])
    rank = list(MARK_KINDS)
    clusters = []
    for group in groups:
        top = min(group, key=lambda m: rank.index(m.kind))
        text = top.text if len(group) == 1 else f"{top.text} +{len(group) - 1} more"
        clusters.append(MarkCluster(group[0].time, top.kind, text, tuple(group)))
    return clusters


def split_gaps(points: Sequence[tuple[float, float]], step: float) -> list[list[tuple[float, float]]]:
    """Time-sorted ``points`` cut into runs wherever two in a row are more than 1.5 steps apart."""
    runs: list[list[tuple[float, float]]] = []
    for point in points:
        if runs and point[0] - runs[-1][-1][0] <= GAP_STEPS * step:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def weight_series(
    entries: list[Entry], start: float, end: float, endpoint: str | None = None
) -> dict[str, dict[str, list[tuple[float, float | None]]]]:
    """``{"traffic": {deployment: [(time, percent), ...]}, "mirror": {...}}`` from the ledger.

    Each value holds until the next point; the first is the split at ``start`` (the last change before
    it), the last repeats the final value at ``end``. A deployment missing from a change takes 0 %; a
    deleted one ends its line (``None``).
    """
    series: dict[str, dict[str, list[tuple[float, float | None]]]] = {"traffic": {}, "mirror": {}}

    def put(kind: str, name: str, at: float, value: float | None) -> None:
        points = series[kind].setdefault(name, [])
        if points and points[-1][0] == at:
            points.pop()  # changes before the window: only the last one holds at its start
        if not points or points[-1][1] != value:
            points.append((at, value))

    for entry in entries:
        if entry.kind not in ("traffic_change", "deployment_deleted") or not _here(entry, endpoint):
            continue
        at = max(_at(entry), start)
        if at > end:
            continue
        if entry.kind == "deployment_deleted":
            for kind, lines in series.items():
                if entry.subject.get("deployment") in lines:
                    put(kind, entry.subject["deployment"], at, None)
            continue
        after = entry.evidence.get("after", {})
        traffic, mirror = after.get("traffic") or {}, after.get("mirror") or {}
        for name in {*traffic, *(k for k, v in series["traffic"].items() if v[-1][1] is not None)}:
            put("traffic", name, at, float(traffic.get(name, 0)))
        for name in {*(k for k, v in mirror.items() if v), *(k for k, v in series["mirror"].items() if v[-1][1])}:
            put("mirror", name, at, float(mirror.get(name, 0)))
    for lines in series.values():
        for name, points in list(lines.items()):
            if all(v is None for _, v in points):
                del lines[name]
            elif points[-1][1] is not None and points[-1][0] < end:
                points.append((end, points[-1][1]))
    return series


def verdict_segments(looks: Iterable[dict], start: float, end: float) -> dict[str, list[tuple[float, float, str]]]:
    """``{rollout: [(start, end, status), ...]}`` from evidence lines, in the order the rollouts began.

    A verdict covers what it judged: from the rollout's line before it (or one interval before, for the
    first look or after a gap of more than 1.5 intervals) to its own time. A verdict at the readiness
    step (step 0, no metrics) is the smoke requests' (``smoke healthy``). Lines without a look (manual
    verbs) only bound the next verdict; equal verdicts in a row are merged.
    """
    lines: dict[str, list[dict]] = defaultdict(list)
    for line in sorted((x for x in looks if "rollout" in x and "time" in x), key=lambda x: float(x["time"])):
        lines[str(line["rollout"])].append(line)
    out = {}
    for rollout, rows in lines.items():
        segments: list[tuple[float, float, str]] = []
        for before, line in zip([None, *rows], rows, strict=False):
            verdict, at = line.get("look") or {}, float(line["time"])
            if not verdict.get("status"):
                continue
            interval = float(verdict.get("interval") or 0.0)
            begin = float(before["time"]) if before else at - interval
            if interval and at - begin > GAP_STEPS * interval:
                begin = at - interval
            status = str(verdict["status"])
            if (before or {}).get("step", 0) == 0 and not verdict.get("metrics"):
                status = f"smoke {status}"
            low, high = max(begin, start), min(at, end)
            if high <= low:
                continue
            if segments and segments[-1][2] == status and segments[-1][1] == low:
                low = segments.pop()[0]
            segments.append((low, high, status))
        if segments:
            out[rollout] = segments
    return out


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


WIDTH = 9.5  # inches: every panel shares the margins below, so their time axes line up


def _axes(title: str, ylabel: str, height: float = 2.8):
    fig, ax = plt.subplots(figsize=(WIDTH, height), dpi=96)
    fig.subplots_adjust(left=0.85 / WIDTH, right=1 - 0.2 / WIDTH, top=1 - 0.32 / height, bottom=0.4 / height)
    ax.set_title(title, loc="left", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    return fig, ax


def _svg(fig, ax, clusters: list[MarkCluster], window: tuple[float, float], *, labels: bool = True) -> str:
    """The marks and the time axis, then the figure as inline SVG."""
    for cluster in clusters:
        at = datetime.fromtimestamp(cluster.time, UTC)
        ax.axvline(at, color=MARK_KINDS[cluster.kind], linestyle=":", linewidth=1.2)
        if labels:
            ax.annotate(cluster.text, (at, 0.98), xycoords=("data", "axes fraction"), rotation=90, va="top",
                        ha="right", fontsize=7, color=MARK_KINDS[cluster.kind])  # fmt: skip
    ax.set_xlim(datetime.fromtimestamp(window[0], UTC), datetime.fromtimestamp(window[1], UTC))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC, minticks=4, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if window[1] - window[0] < 600 else "%H:%M", tz=UTC))
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def _no_data(ax, text: str = "no data in this window") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", color="#888")


def _plot(
    title: str,
    ylabel: str,
    lines: list[tuple[str, list[tuple[float, float]], str]],
    clusters: list[MarkCluster],
    window: tuple[float, float],
    step: float,
) -> str:
    """One panel: a line per deployment (same colour on every panel), cut at gaps, and the ledger's marks."""
    fig, ax = _axes(title, ylabel)
    for name, points, style in lines:
        suffix = " p95" if style == "--" and "p95" in title else (" client" if style == "--" else "")
        label = f"{name or '(unrouted)'}{suffix}"
        for run in split_gaps(points, step):
            xs = [datetime.fromtimestamp(t, UTC) for t, _ in run]
            marker = "." if len(points) < 30 or len(run) == 1 else None  # a lone point is still seen
            ax.plot(xs, [v for _, v in run], style, color=color_of(name), label=label, linewidth=1.6, marker=marker)
            label = "_nolegend_"
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    if any(points for _, points, _ in lines):
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    else:
        _no_data(ax)
    return _svg(fig, ax, clusters, window)


def _weights_plot(weights: dict[str, dict[str, list]], clusters: list[MarkCluster], window: tuple[float, float]) -> str:
    """Each deployment's share of live traffic as a step plot; the mirrored share dashed."""
    fig, ax = _axes("Traffic weight per deployment (live solid, mirrored dashed)", "% of live requests")
    for kind, style in (("traffic", "-"), ("mirror", "--")):
        for name, points in sorted(weights[kind].items()):
            xs = [datetime.fromtimestamp(t, UTC) for t, _ in points]
            ys = [float("nan") if v is None else v for _, v in points]
            label = f"{name}{' mirror' if kind == 'mirror' else ''}"
            ax.step(xs, ys, style, where="post", color=color_of(name), label=label, linewidth=1.8)
    ax.grid(alpha=0.3)
    ax.set_ylim(-3, 108)
    ax.set_yticks([0, 25, 50, 75, 100])
    if weights["traffic"] or weights["mirror"]:
        ax.legend(loc="center left", fontsize=8, frameon=False)
    else:
        _no_data(ax, "no traffic change in the ledger up to this window's end")
    return _svg(fig, ax, clusters, window)


def _verdicts_plot(
    segments: dict[str, list[tuple[float, float, str]]], clusters: list[MarkCluster], window: tuple[float, float]
) -> str:
    """A band per rollout (first on top), coloured by the judge's verdict over what each look judged."""
    fig, ax = _axes("Health verdicts per rollout (what each look judged)", "", height=0.85 + 0.32 * len(segments))
    for row, spans in enumerate(reversed(segments.values())):
        for status, parts in _by_status(spans).items():
            bars = [(mdates.date2num(datetime.fromtimestamp(a, UTC)), (b - a) / 86400) for a, b in parts]
            ax.broken_barh(bars, (row - 0.35, 0.7), color=VERDICT_COLORS.get(status, "#333333"))
    ax.set_yticks(range(len(segments)), [_short_id(r) for r in reversed(segments)])
    ax.set_ylim(-0.6, len(segments) - 0.4)
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig, ax, clusters, window, labels=False)


def _by_status(spans: list[tuple[float, float, str]]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for a, b, status in spans:
        out[status].append((a, b))
    return out


def _short_id(rollout: str) -> str:
    """``resume-ner/v7/1`` -> ``v7/1``: the page is about one endpoint."""
    return rollout.split("/", 1)[1] if rollout.count("/") == 2 else rollout


_PALETTE: dict[str, str] = {}


def color_of(name: str) -> str:
    """A deployment's colour, the same on every panel (grey: requests no deployment answered)."""
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
    looks: list[dict] | None = None,
) -> str:
    """The dashboard's HTML for the window ``(start, end]``; ``looks``: the rollouts' evidence lines."""
    span = store.time_range()
    if span is not None:  # fit the window to the data it holds, within what was asked
        start = max(start, span[0] - 30)
    step = step or max(5.0, (end - start) / 60)
    data = collect(store, start, end, step)
    window = (start, end)
    marks = marks_from_ledger(ledger_entries, start, end, endpoint)
    clusters = cluster_marks(marks, (end - start) * CLUSTER_SHARE)
    weights = weight_series(ledger_entries, start, end, endpoint)
    segments = verdict_segments(looks or [], start, end)

    def lines(panel: str, style: str = "-") -> list[tuple[str, list, str]]:
        return [(name, points, style) for name, points in sorted(data[panel].items())]

    def plot(title: str, ylabel: str, panel_lines: list) -> str:
        return _plot(title, ylabel, panel_lines, clusters, window, step)

    rollout = [_weights_plot(weights, clusters, window)]
    if segments:
        rollout += [
            _verdicts_plot(segments, clusters, window),
            _legend(segments),
            _rollouts_table(segments, looks or []),
        ]
    panels = [
        ("Rollout", rollout),
        ("System metrics", [
            plot("Latency per request (mean solid, p95 dashed)", "ms",
                 lines("latency_mean") + lines("latency_p95", "--")),
            plot(f"Resumes processed per {step:.0f} s", "resumes", lines("resumes")),
            plot("Error rate (server errors solid, client errors dashed)", "% of requests",
                 lines("server_error_rate") + lines("client_error_rate", "--")),
        ]),
        ("Model signals", [
            plot("Entities per resume (mean)", "entities", lines("entities_per_resume")),
            plot("Empty-prediction rate", "% of resumes", lines("empty_rate")),
        ]),
    ]  # fmt: skip
    if data["exact_agreement"]:  # only when a mirror or probe pair compared answers in this window
        panels[2][1].append(plot("Shadow agreement: resumes answered exactly as the reference (mirror, probe)",
                                 "% of compared", lines("exact_agreement")))  # fmt: skip
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
        ".legend{font-size:12px;color:#444;margin:0 0 6px 70px}.legend span{display:inline-block;width:12px;"
        "height:12px;margin:0 4px 0 12px;vertical-align:middle}"
        "table{border-collapse:collapse;font-size:12px}td,th{padding:3px 8px;border-bottom:1px solid #eee;"
        "text-align:left}pre{font-size:12px;background:#f7f7f7;padding:8px;overflow-x:auto}</style></head><body>",
        f"<h1>Endpoint <code>{html.escape(endpoint)}</code></h1>",
        f"<div class='meta'>{_when(start)} to {_when(end)}, steps of {step:.0f} s; {html.escape(summary)}. "
        f"Generated {_when(time.time())}. Vertical marks come from the audit ledger; a gap in a line is a gap "
        "in the data.</div>",
    ]
    for heading, plots in panels:
        parts.append(f"<h2>{heading}</h2>")
        parts += [f"<div class='plot'>{svg}</div>" if svg.startswith("<svg") else svg for svg in plots]
    if marks:
        parts.append("<h2>Ledger marks</h2><table><tr><th>time</th><th>kind</th><th>what</th></tr>")
        parts += [f"<tr><td>{_when(m.time)}</td><td>{m.kind}</td><td>{html.escape(m.text)}</td></tr>" for m in marks]
        parts.append("</table>")
    if alerts_text:
        parts.append(f"<h2>Alert rules</h2><pre>{html.escape(alerts_text)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _legend(segments: dict[str, list[tuple[float, float, str]]]) -> str:
    """The verdict band's key, as HTML: only the verdicts it shows."""
    shown = {status for spans in segments.values() for _, _, status in spans}
    keys = [s for s in VERDICT_COLORS if s in shown] + sorted(shown - set(VERDICT_COLORS))
    swatches = "".join(f"<span style='background:{VERDICT_COLORS.get(s, '#333333')}'></span>{s}" for s in keys)
    return f"<div class='legend'>verdicts:{swatches}</div>"


def _rollouts_table(segments: dict[str, list[tuple[float, float, str]]], looks: list[dict]) -> str:
    """Per rollout in the band: when it was judged, its verdicts, and where its last evidence line left it."""
    rows = ["<table><tr><th>rollout</th><th>judged</th><th>looks by verdict</th><th>last line</th></tr>"]
    for rollout, spans in segments.items():
        mine = sorted((x for x in looks if x.get("rollout") == rollout), key=lambda x: float(x["time"]))
        judged = [
            x for x in mine if spans[0][0] <= float(x["time"]) <= spans[-1][1] and (x.get("look") or {}).get("status")
        ]
        counts = ", ".join(f"{s} {n}" for s, n in Counter(str(x["look"]["status"]) for x in judged).most_common())
        last = f"{mine[-1].get('phase', '?')} at {mine[-1].get('weight', '?')} %"
        rows.append(
            f"<tr><td>{html.escape(rollout)}</td><td>{_when(spans[0][0])[11:19]} to {_when(spans[-1][1])[11:19]}</td>"
            f"<td>{html.escape(counts)}</td><td>{html.escape(last)}</td></tr>"
        )
    return "\n".join([*rows, "</table>"])


def write_dashboard(
    store_path: Path, ledger_entries: list[Entry], out: Path, *, endpoint: str, hours: float = 1.0,
    alerts_text: str | None = None, looks: list[dict] | None = None,
) -> Path:  # fmt: skip
    end = time.time()
    with TelemetryStore(store_path) as store:
        page = render(
            store, ledger_entries, endpoint=endpoint, start=end - hours * 3600, end=end, alerts_text=alerts_text,
            looks=looks,
        )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
