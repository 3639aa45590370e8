"""Figures a person would rather look at than read, as SVG text: a run's step graph coloured by
status, its timeline (a Gantt of its spans), the scenario x run verdict matrix, and the pass
rate per workflow over time. Shared by the explorer and the report.

Drawn with matplotlib's SVG backend: no display, no network, no CDN. Text stays text
(``svg.fonttype: none``) and the output is byte-identical for the same input (a fixed
hash salt, no date), so a report rebuilt from the same ledger is the same file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

STATUS_COLOURS = {
    "succeeded": "#2e7d32",
    "cached": "#81c784",
    "approved": "#1b5e20",
    "running": "#1565c0",
    "pending": "#bdbdbd",
    "waiting": "#f9a825",
    "failed": "#c62828",
    "rejected": "#6a1b9a",
    "skipped": "#9e9e9e",
    "cancelled": "#5d4037",
    "ok": "#2e7d32",
    "error": "#c62828",
}
VERDICT_COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "error": "#ef6c00", None: "#eeeeee"}
KIND_COLOURS = {"step": "#90a4ae", "cell": "#cfd8dc", "llm": "#7e57c2", "retrieval": "#26a69a", "tool": "#ff7043"}


def _pyplot():
    import matplotlib

    matplotlib.use("svg", force=False)
    matplotlib.rcParams.update(
        {"svg.hashsalt": "kit", "svg.fonttype": "none", "font.size": 9, "font.family": "DejaVu Sans"}
    )
    import matplotlib.pyplot as plt

    return plt


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # no XML prologue: it sits inline in HTML


def _reduced(steps: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The graph's edges without those another path already implies (its transitive reduction): the
    picture shows the order, and a reader follows one arrow to the next, not a thicket."""
    deps = {s["step_id"]: set(s.get("depends_on") or []) for s in steps}
    reach: dict[str, set[str]] = {}
    for sid in deps:  # steps come in graph order
        reach[sid] = set().union(*(reach.get(d, set()) | {d} for d in deps[sid])) if deps[sid] else set()
    edges = []
    for sid, direct in deps.items():
        for d in sorted(direct):  # sorted: the same graph draws the same bytes
            if not any(d in reach.get(other, set()) for other in direct if other != d):
                edges.append((d, sid))
    return edges


def step_graph(steps: Sequence[dict[str, Any]], selected: str | None = None) -> str:
    """The steps as boxes in dependency layers, arrows from what a step waits for, coloured by status.

    `steps`: dicts with ``step_id``, ``status`` and ``depends_on`` (a list), in graph order."""
    plt = _pyplot()
    depth: dict[str, int] = {}
    for step in steps:  # in graph order, so a step's dependencies have their depth already
        depth[step["step_id"]] = 1 + max((depth.get(d, 0) for d in step.get("depends_on") or []), default=-1)
    layers: dict[int, list[str]] = {}
    for step in steps:
        layers.setdefault(depth[step["step_id"]], []).append(step["step_id"])
    where = {sid: (d, -i + (len(ids) - 1) / 2) for d, ids in layers.items() for i, sid in enumerate(ids)}
    width = max(len(layers), 1)
    height = max((len(ids) for ids in layers.values()), default=1)
    edges = [(a, b) for a, b in _reduced(steps) if a in where and b in where]
    arcs = any(where[b][0] - where[a][0] > 1 for a, b in edges)
    fig, ax = plt.subplots(figsize=(1.9 * width + 0.5, 0.8 * height + 0.4 + 0.5 * arcs))
    for a, b in edges:
        (x0, y0), (x1, y1) = where[a], where[b]
        bend = 0.0 if x1 - x0 <= 1 else -0.2  # an arrow that skips a layer goes round the boxes between
        ax.annotate(
            "",
            xy=(x1 - 0.38, y1),
            xytext=(x0 + 0.38, y0),
            arrowprops={"arrowstyle": "->", "color": "#616161", "lw": 1, "connectionstyle": f"arc3,rad={bend}"},
        )
    for step in steps:
        x, y = where[step["step_id"]]
        colour = STATUS_COLOURS.get(step.get("status"), "#bdbdbd")
        edge = "#000000" if step["step_id"] == selected else colour
        ax.add_patch(
            plt.Rectangle(
                (x - 0.38, y - 0.28),
                0.76,
                0.56,
                facecolor=colour,
                edgecolor=edge,
                linewidth=2.5 if step["step_id"] == selected else 1,
                alpha=0.9,
            )
        )
        ax.text(x, y + 0.05, step["step_id"], ha="center", va="center", color="white", fontsize=8, weight="bold")
        ax.text(x, y - 0.15, step.get("status") or "", ha="center", va="center", color="white", fontsize=7)
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(-height / 2 - 0.1, height / 2 + 0.1 + 0.6 * arcs)
    ax.axis("off")
    return _svg(fig)


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def timeline(spans: Sequence[dict[str, Any]], selected: str | None = None, max_rows: int = 60) -> str:
    """A Gantt of a run's spans, a row per step (attempts side by side, LLM calls and custom spans on their
    own rows under it), coloured by status or kind; cached steps show as a marker at their moment."""
    plt = _pyplot()
    timed = [s for s in spans if _time(s.get("started_at")) and s.get("kind") != "run"]
    if not timed:
        fig, ax = plt.subplots(figsize=(6, 0.6))
        ax.text(0.5, 0.5, "no spans recorded", ha="center", va="center")
        ax.axis("off")
        return _svg(fig)
    start = min(_time(s["started_at"]) for s in timed)
    rows: list[tuple[str, list[dict[str, Any]]]] = []
    index: dict[str, int] = {}
    for span in timed:
        kind = span.get("kind")
        if kind == "cell":
            continue
        label = span.get("step_id") or span.get("name") or "?"
        if kind != "step":
            label = f"  {label} · {span.get('name')}"
        if label not in index:
            index[label] = len(rows)
            rows.append((label, []))
        rows[index[label]][1].append(span)
    rows = rows[:max_rows]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 0.7))
    for y, (_label, items) in enumerate(rows):
        for span in items:
            t0 = (_time(span["started_at"]) - start).total_seconds()
            t1 = _time(span.get("ended_at")) or _time(span["started_at"]) or start - start
            t1 = (t1 - start).total_seconds() if isinstance(t1, datetime) else t0
            attrs = span.get("attributes") or {}
            if span.get("kind") == "step":
                colour = STATUS_COLOURS["failed"] if span.get("status") == "error" else STATUS_COLOURS["succeeded"]
                if "cached_from" in attrs:
                    colour = STATUS_COLOURS["cached"]
            else:
                colour = KIND_COLOURS.get(span.get("kind"), "#ffb74d")
            width = max(t1 - t0, 0.0)
            if width == 0:
                ax.plot([t0], [y], marker="D", color=colour, markersize=6)
            else:
                ax.barh(
                    y,
                    width,
                    left=t0,
                    height=0.6,
                    color=colour,
                    edgecolor="#000000" if span.get("step_id") == selected else colour,
                )
            if span.get("kind") == "step" and attrs.get("attempt", 1) > 1:
                ax.text(t0, y + 0.38, f"attempt {attrs['attempt']}", fontsize=6, color="#424242")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the run started")
    ax.grid(axis="x", color="#eeeeee")
    ax.spines[["top", "right"]].set_visible(False)
    return _svg(fig)


def verdict_matrix(cells: Sequence[dict[str, Any]], max_scenarios: int = 400) -> str:
    """Scenarios (rows) by their last runs (columns, oldest left), coloured by verdict, each change marked:
    ``R`` regressed (pass then fail), ``F`` fixed (fail then pass), ``~`` flaky (it changed more than once).

    `cells`: dicts with ``scenario_id``, ``run_id`` and ``verdict``, in run order per scenario."""
    plt = _pyplot()
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for cell in cells:
        by_scenario.setdefault(cell["scenario_id"], []).append(cell)
    names = sorted(by_scenario)[:max_scenarios]
    columns = max((len(v) for v in by_scenario.values()), default=1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.35 * columns + 3, 0.24 * len(names) + 0.8))
    for y, name in enumerate(names):
        history = by_scenario[name]
        flips = sum(1 for a, b in zip(history, history[1:]) if a["verdict"] != b["verdict"])
        for x, cell in enumerate(history):
            ax.add_patch(plt.Rectangle((x, y), 0.92, 0.85, color=VERDICT_COLOURS.get(cell["verdict"], "#eeeeee")))
            if x:
                before, now = history[x - 1]["verdict"], cell["verdict"]
                mark = "R" if before == "pass" and now != "pass" else "F" if before != "pass" and now == "pass" else ""
                if mark:
                    ax.text(
                        x + 0.46, y + 0.45, mark, ha="center", va="center", color="white", fontsize=7, weight="bold"
                    )
        if flips > 1:
            ax.text(columns + 0.1, y + 0.45, "~ flaky", va="center", fontsize=7, color="#ef6c00")
    ax.set_xlim(0, columns + 1.2)
    ax.set_ylim(len(names), 0)
    ax.set_yticks([i + 0.45 for i in range(len(names))], names)
    ax.set_xticks(
        [i + 0.46 for i in range(columns)],
        [f"-{columns - 1 - i}" if columns - 1 - i else "last" for i in range(columns)],
    )
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return _svg(fig)


def pass_rates(points: Sequence[dict[str, Any]]) -> str:
    """Pass rate per workflow over time: `points` are dicts with ``workflow``, ``day`` and ``rate`` (0..1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    by_workflow: dict[str, list[dict[str, Any]]] = {}
    for point in points:
        by_workflow.setdefault(point["workflow"], []).append(point)
    for name in sorted(by_workflow):
        series = sorted(by_workflow[name], key=lambda p: str(p["day"]))
        ax.plot([str(p["day"]) for p in series], [p["rate"] for p in series], marker="o", label=name)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("scenarios passed")
    ax.grid(color="#eeeeee")
    if by_workflow:
        ax.legend(loc="lower left", fontsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    fig.autofmt_xdate()
    return _svg(fig)
