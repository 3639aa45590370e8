"""`kit.explore()`: the ledger in Jupyter, as an ipywidgets app (DESIGN section 14).

No server and no iframe: the app is widgets in the notebook's own output, and every
click reads the ledger through `kit.ledger.history` in short read-only connections, so
an open explorer never holds the ledger between interactions and never makes a run
wait. Objects (tables, LLM calls, the run's manifest) are read through the verified
object store, which re-hashes them. Approvals go through `Approvals.decide`: the same
policy, entitlements, four-eyes rule and audit as `kit approve`.

Views, each reachable by clicking: ``runs`` (filtered by workflow, status,
environment, principal, scenario and time), ``run`` (step graph and timeline sharing
one selection), ``step`` (the run with one step selected: its parameters, outputs,
error, executed notebook, spans), ``llm`` (LLM calls and their messages),
``scenarios`` (the verdict matrix; expected beside actual), ``replays`` (baseline,
current and expected) and ``approvals`` (pending decisions, approve and reject).

Each view also leaves a static rendering (tables and inline SVG, no script) as its own
display output beside the widget, updated as the view changes, so a saved notebook
shows the last view on GitHub and in nbconvert without a kernel. While the live app is
on the page, its stylesheet hides that copy.

CSS classes, for browser tests and user stylesheets:

- ``kit-explorer``: the app; ``kit-nav``: the view switcher (buttons Runs, Run, Step, LLM calls,
  Scenarios, Replays, Approvals); ``kit-refresh``: Refresh; ``kit-message``: the line that says
  what happened (a decision, a refusal, an error);
- ``kit-filter`` (and ``kit-filter-workflow``, ``-status``, ``-env``, ``-principal``,
  ``-scenario``, ``-since``, ``-until``): the runs' filters;
- ``kit-row``: every clickable row, ``kit-selected`` the selected one; ``kit-run-row``: a run in
  the runs table (its text starts with the run id); ``kit-step-row``: a step in a run's step list
  (its text starts with the step id); ``kit-llm-row``: an LLM call; ``kit-replay-row``: a replay;
- ``kit-step-graph``, ``kit-timeline``, ``kit-verdict-matrix``: the figures; ``kit-back``: back
  buttons; ``kit-open-run``, ``kit-open-step``, ``kit-open-llm``, ``kit-open-approvals``: buttons
  that go there; ``kit-llm-scope``: whose LLM calls are listed;
- ``kit-render-notebook``: renders the executed notebook into ``kit-notebook``;
- ``kit-scenario-select``, ``kit-scenario-run-select``: the scenario and its run;
- ``kit-approval-row``: a pending decision, holding ``kit-approve`` and ``kit-reject``;
  ``kit-approval-comment``: the comment sent with either;
- ``kit-static``: the static copy (its own output, hidden by the app's stylesheet while the app is
  live); its tables are ``kit-run-table``, ``kit-step-table``, ``kit-llm-table``, ...

For tests and power users: ``app = kit.explore(as_="bob")``, then ``app.open_run(id)``,
``app.open_step(step_id)``, ``app.open_llm_calls()``, ``app.open_scenarios()``,
``app.open_replays()``, ``app.open_approvals()``, ``app.approve(run, step)``,
``app.reject(run, step)``, ``app.render_notebook()``, ``app.refresh()``, ``app.latest_run()``;
``app.view``, ``app.message``, ``app.static_html``, ``app.find(css_class)``.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from kit.base.clock import now as clock_now
from kit.base.display import brief, cell, shorten, strip_ansi
from kit.base.values import jsonable, table_preview
from kit.errors import KitError, NotFound
from kit.ledger.history import History
from kit.ledger.ledger import Ledger
from kit.ledger.objects import ObjectStore
from kit.review.figures import KIND_COLOURS, STATUS_COLOURS, VERDICT_COLOURS
from kit.spec.project import Project

RUNS_SHOWN = 200  # rows of the runs table: the newest, filtered
CALLS_SHOWN = 200
SPANS_SHOWN = 300  # of one step
SCENARIO_RUNS = 10  # columns of the verdict matrix
MATRIX_SCENARIOS = 40  # rows of the matrix (matplotlib draws 2,000 cells in over a second)
SCENARIOS_LISTED = 500  # rows of the table under it
PREVIEW_ROWS = 10  # rows of a table output's preview
VALUE_CHARS = 4000  # of one JSON value shown whole
VIEWS = (
    ("Runs", "runs"),
    ("Run", "run"),
    ("Step", "step"),
    ("LLM calls", "llm"),
    ("Scenarios", "scenarios"),
    ("Replays", "replays"),
    ("Approvals", "approvals"),
)
LLM_COLUMNS = (
    ("started", 19),
    ("run", 37),
    ("step", 16),
    ("model", 22),
    ("in", 6),
    ("out", 6),
    ("ms", 8),
    ("answer", 8),
)
FACETS = (  # the runs' filters with a list of values: argument of History.runs, label, column
    ("workflow", "workflow", "workflow"),
    ("status", "status", "status"),
    ("env", "environment", "env"),
    ("principal", "principal", "principal"),
    ("scenario", "scenario", "scenario_id"),
)
RUN_COLUMNS = (
    ("run", "run_id", 37),
    ("workflow", "workflow", 14),
    ("status", "status", 9),
    ("as", "principal", 10),
    ("env", "env", 6),
    ("started", "started_at", 19),
    ("s", "seconds", 7),
    ("steps", "steps", 5),
    ("scenario", "scenario_id", 40),
)

_TABLES_CSS = (  # nbconvert right-aligns table cells, with a selector hard to outdo
    "{0} table{{border-collapse:collapse;margin:4px 0}}"
    "{0} table th,{0} table td{{border:1px solid #ddd;padding:2px 6px;text-align:left!important;vertical-align:top;"
    "font-size:12px}}"
    "{0} table pre,{0} pre{{margin:0;white-space:pre-wrap;font-size:11px;text-align:left!important}}"
    "{0} h4{{margin:10px 0 4px}}"
)
LIVE_CSS = (
    "<style>.kit-static{display:none}"
    ".kit-explorer button.kit-row{font-family:monospace;font-size:12px;white-space:pre;text-align:left;"
    "justify-content:flex-start;width:auto;height:22px;line-height:22px;margin:1px 0}"
    ".kit-explorer .kit-row-head{font-family:monospace;font-size:12px;white-space:pre;margin:0;padding:0 6px;"
    "font-weight:bold}" + _TABLES_CSS.format(".kit-explorer") + "</style>"
)
STATIC_CSS = "<style>" + _TABLES_CSS.format(".kit-static") + "</style>"
_SVG_ID = re.compile(r'(\bid="|url\(#|href="#)')


def explore(as_: str | None = None, project: str | Path | None = None) -> Explorer:
    """The explorer of the project here (or `project`), acting as `as_` (then KIT_PRINCIPAL, then the
    OS user) when it approves or rejects. Display it (the cell's last expression) to use it."""
    from kit.spec.policy import resolve_principal

    return Explorer(Project.discover(project), resolve_principal(as_))


# ---- HTML: the static copy and the read-only parts of the live app are the same snippets ----------


def _e(value: Any, width: int | None = None) -> str:
    """A value as escaped table text."""
    return html.escape(cell(value, width))


def _pre(value: Any, limit: int = VALUE_CHARS) -> str:
    """A JSON value (or text) in full, indented, escaped; cut at `limit` characters."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(jsonable(value), indent=2, ensure_ascii=False, default=str)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f"<pre>{html.escape(text)}</pre>"


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], css_class: str = "") -> str:
    """A table of cells that are HTML already (escape them first)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    attr = f' class="{css_class}"' if css_class else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of label and (HTML) value; empty values left out."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in pairs if v not in ("", None))
    return f"<table>{rows}</table>"


def _h(title: str) -> str:
    return f"<h4>{html.escape(title)}</h4>"


def _p(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _static_svg(svg: str) -> str:
    """An SVG for the static copy, its ids renamed: the live copy on the same page holds the same ids."""
    return _SVG_ID.sub(lambda m: m.group(1) + "kit-static-", svg)


def _tint(colour: str | None, strength: float = 0.2) -> str:
    """A light background from a figure's colour, so rows and figures speak the same colours."""
    if not colour:
        return "#f5f5f5"
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    mix = [round(255 - (255 - c) * strength) for c in (r, g, b)]
    return "#" + "".join(f"{c:02x}" for c in mix)


def _line(values: Sequence[tuple[Any, int]]) -> str:
    """Fixed-width columns on one line (a row's text in a monospaced button)."""
    return "  ".join(cell(v, w).ljust(w) for v, w in values).rstrip()


def _seconds(start: Any, end: Any, scale: float = 1) -> float | None:
    """The time between two moments (in seconds, times `scale`), or None when one is missing."""
    if isinstance(start, datetime) and isinstance(end, datetime):
        return round((end - start).total_seconds() * scale, 3)
    return None


def _graph_order(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps with each after what it waits for (the ledger lists them by start), for the graph."""
    import graphlib

    by_id = {s["step_id"]: s for s in steps}
    sorter = graphlib.TopologicalSorter(
        {sid: [d for d in s.get("depends_on") or [] if d in by_id] for sid, s in by_id.items()}
    )
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError:
        return steps
    return [by_id[sid] for sid in order]


def _llm_mode(attributes: dict[str, Any]) -> str:
    """live, recorded or replayed: how the call's answer came."""
    if attributes.get("kit.llm.replayed"):
        return "replayed"
    mode = attributes.get("kit.llm.mode")
    return {"record": "recorded", "replay": "replayed"}.get(mode, mode or "live")


def _trend(verdicts: list[str]) -> str:
    """A scenario's history in a word: regressed or fixed (its last change), flaky (it changed often)."""
    flips = [(a, b) for a, b in zip(verdicts, verdicts[1:]) if a != b]
    if len(flips) > 1:
        return "flaky"
    if not flips:
        return ""
    return "fixed" if flips[-1][1] == "pass" else "regressed"


def _coloured(word: str | None, colours: dict) -> str:
    """A status or verdict in bold, in the figures' colour for it."""
    colour = colours.get(word, "#616161")
    return f'<span style="color:{colour};font-weight:bold">{html.escape(word or "")}</span>'


def _status(status: str | None) -> str:
    return _coloured(status, STATUS_COLOURS)


def _verdict(verdict: str | None) -> str:
    return _coloured(verdict, VERDICT_COLOURS)


def _notebook_html(path: Path) -> str:
    """An executed notebook as HTML without scripts: nbconvert's basic template (no CDN, no require.js),
    script-like elements dropped whole, then only plain tags and attributes kept (no event handlers, no
    javascript: links; images only as data:image). nbconvert's own sanitizer escapes even <p>."""
    import bleach
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.read(str(path), as_version=4)
    for item in notebook.cells:  # an output's script form gives way to its HTML, text or image form
        for output in item.get("outputs", []):
            for mime in [m for m in output.get("data", {}) if "javascript" in m or "widget" in m]:
                del output["data"][mime]
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)
    cleaner = bleach.Cleaner(
        tags=_NOTEBOOK_TAGS,
        attributes=_notebook_attribute,
        protocols={"http", "https", "mailto", "data"},
        strip=True,
        strip_comments=True,
    )
    return cleaner.clean(_DROPPED.sub("", body))


_NOTEBOOK_TAGS = frozenset(
    "a abbr b blockquote br caption code col colgroup dd del details div dl dt em figcaption figure h1 h2 h3 h4 "
    "h5 h6 hr i img ins kbd li ol p pre q s samp small span strong sub summary sup table tbody td tfoot th thead "
    "tr u ul var".split()
)
_DROPPED = re.compile(r"<(script|style|iframe|object|embed|template|noscript)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)


def _notebook_attribute(tag: str, name: str, value: str) -> bool:
    if name in ("class", "id", "title", "colspan", "rowspan", "align"):
        return True
    if tag == "a" and name == "href":
        return not value.strip().lower().startswith("data:")
    if tag == "img":
        return name in ("alt", "width", "height") or (name == "src" and value.startswith("data:image/"))
    return False


# ---- the app --------------------------------------------------------------------------------------


class _Page:
    """One view as it is built: the live widgets and, part for part, the same content as static HTML."""

    def __init__(self, view: str, title: str):
        self.view, self.title = view, title
        self.children: list[widgets.Widget] = []
        self.parts: list[str] = []
        self.slots: dict[str, tuple[widgets.HTML, int]] = {}

    def html(self, snippet: str, css_class: str = "", slot: str = "") -> None:
        """Read-only content: an HTML widget live, the same snippet in the static copy."""
        widget = widgets.HTML(snippet)
        if css_class:
            widget.add_class(css_class)
        if slot:
            self.slots[slot] = (widget, len(self.parts))
        self.children.append(widget)
        self.parts.append(snippet)

    def svg(self, svg: str, css_class: str) -> None:
        widget = widgets.HTML(svg)
        widget.add_class(css_class)
        self.children.append(widget)
        self.parts.append(_static_svg(svg))

    def widget(self, widget: widgets.Widget, static: str = "") -> None:
        """Something to click, and what stands for it in the static copy."""
        self.children.append(widget)
        self.parts.append(static)

    def static(self, snippet: str) -> None:
        """What stands for the last widgets in the static copy (a table of rows with buttons, say)."""
        self.parts.append(snippet)

    def fill(self, slot: str, snippet: str) -> None:
        widget, index = self.slots[slot]
        widget.value = snippet
        self.parts[index] = snippet


def _button(description: str, css_class: str, on_click: Callable[[], None], **style: Any) -> widgets.Button:
    button = widgets.Button(description=description, tooltip=style.pop("tooltip", description), **style)
    button.add_class(css_class)
    button.on_click(lambda _button: on_click())
    return button


class Row:
    """One row of a clickable table: its cells, what a click does, its colour, whether it is selected."""

    def __init__(self, values: Sequence[Any], on_click: Callable[[], None], colour: str | None, selected=False):
        self.values, self.on_click, self.colour, self.selected = values, on_click, colour, selected


def _clickable(columns: Sequence[tuple[str, int]], rows: Sequence[Row], css_class: str) -> tuple[widgets.VBox, str]:
    """A table whose rows open something: live, a monospaced button per row (class `css_class`, tinted
    like its status in the figures, the selected one bold); static, the same cells as an HTML table."""
    buttons = []
    for row in rows:
        text = _line(list(zip(row.values, [w for _, w in columns])))
        button = widgets.Button(description=text, tooltip=text, layout=widgets.Layout(width="auto"))
        for name in ("kit-row", css_class) + (("kit-selected",) if row.selected else ()):
            button.add_class(name)
        button.style.button_color = _tint(row.colour)
        button.style.font_weight = "bold" if row.selected else ""
        button.on_click(lambda _button, act=row.on_click: act())
        buttons.append(button)
    head = widgets.HTML(f'<pre class="kit-row-head">{html.escape(_line(columns))}</pre>')
    static = _table(
        [label for label, _ in columns],
        [[_status(v) if label == "status" else _e(v) for (label, _), v in zip(columns, row.values)] for row in rows],
        css_class.removesuffix("-row") + "-table",  # not the rows' class: a browser test looks for those
    )
    return widgets.VBox([head, *buttons]), static


class Explorer:
    """The app: one root widget (`widget`), the current view (`view`) and its static copy (`static_html`)."""

    def __init__(self, project: Project, principal: str):
        self.project = project
        self.principal = principal
        self.ledger = Ledger(project.ledger_path)
        self.history = History(self.ledger)
        self.store = ObjectStore(project.objects_dir)
        self.view = "runs"
        self.run_id: str | None = None
        self.step_id: str | None = None
        self.llm_run: str | None = None  # the LLM calls shown are this run's (None: all runs')
        self.llm_span: str | None = None
        self.scenario_id: str | None = None
        self.scenario_run: str | None = None
        self.replay_run: str | None = None  # the baseline run of the replay shown
        self.message = ""
        self.last_error: BaseException | None = None  # an unexpected error a view caught (for tests)
        self._page: _Page | None = None
        self._handles: list[Any] = []
        self._quiet = False  # while the app itself sets widget values: observers stay still
        self._manifests: dict[str, dict[str, Any]] = {}
        self._drawn_matrix: tuple[tuple, str] = ((), "")

        self._nav = widgets.ToggleButtons(options=VIEWS, value="runs", description="View")
        self._nav.add_class("kit-nav")
        self._nav.observe(self._on_nav, "value")
        refresh = _button("Refresh", "kit-refresh", lambda: self._act(self._show_current), icon="refresh")
        self._message = widgets.HTML("")
        self._message.add_class("kit-message")
        self._filters = self._make_filters()
        self._body = widgets.VBox()
        header = widgets.HTML(
            LIVE_CSS + f"<b>kit explorer</b> · {html.escape(str(project.root))} · acting as "
            f"<b>{html.escape(principal)}</b>"
        )
        self.widget = widgets.VBox([header, widgets.HBox([self._nav, refresh]), self._message, self._body])
        self.widget.add_class("kit-explorer")
        self._act(self._show_current)

    # ---- the Python API ----------------------------------------------------------------------

    def open_runs(self, **filters: str) -> None:
        """The runs table; `filters` set workflow, status, env, principal, scenario, since, until."""
        self._act(self._open_runs, filters)

    def open_run(self, run_ref: str) -> None:
        """A run (an id, a unique prefix, or `last`): its graph, timeline and steps."""
        self._act(self._open_run, run_ref)

    def open_step(self, step_id: str, run_ref: str | None = None) -> None:
        """A step of the open run (or of `run_ref`), selected in the graph and the timeline."""
        self._act(self._open_step, step_id, run_ref)

    def open_llm_calls(self, run_ref: str | None = None, span_id: str | None = None) -> None:
        """LLM calls (of one run, or of all), and one call's messages when `span_id` is given."""
        self._act(self._open_llm, run_ref, span_id)

    def open_scenarios(self, scenario_id: str | None = None, run_id: str | None = None) -> None:
        """The verdict matrix; with a scenario (and one of its runs, the newest by default) its comparisons."""
        self._act(self._open_scenarios, scenario_id, run_id)

    def open_replays(self, baseline_run: str | None = None) -> None:
        """Replays; with a baseline run, its expectations: expected, baseline and current side by side."""
        self._act(self._open_replays, baseline_run)

    def open_approvals(self) -> None:
        self._act(self._go, "approvals")

    def approve(self, run_ref: str, step_id: str, comment: str | None = None) -> str | None:
        """Approve as this app's principal, through the policy; the decision, or None (see `message`)."""
        return self._act(self._decide, run_ref, step_id, False, comment)

    def reject(self, run_ref: str, step_id: str, comment: str | None = None) -> str | None:
        return self._act(self._decide, run_ref, step_id, True, comment)

    def render_notebook(self) -> None:
        """Render the open step's executed notebook inline (as HTML, without scripts)."""
        self._act(self._render_notebook)

    def latest_run(self) -> str | None:
        """The newest run's id (None in an empty ledger): `app.open_run(app.latest_run())`."""
        rows = self.history.runs(limit=1)
        return rows[0]["run_id"] if rows else None

    def refresh(self) -> None:
        """Read the ledger again for the current view (runs may have appeared since)."""
        self._act(self._show_current)

    @property
    def static_html(self) -> str:
        """The current view as static HTML: what a saved notebook shows without a kernel."""
        page = self._page
        if page is None:
            return ""
        message = f'<p class="kit-message-static"><b>{html.escape(self.message)}</b></p>' if self.message else ""
        return (
            f'<div class="kit-static">{STATIC_CSS}<h3>kit explorer · {html.escape(page.title)}</h3>'
            f"<p>{html.escape(str(self.project.root))} · as {html.escape(self.principal)} · read "
            f"{clock_now():%Y-%m-%d %H:%M:%S} UTC</p>{message}{''.join(page.parts)}</div>"
        )

    def find(self, css_class: str) -> list[widgets.Widget]:
        """The app's widgets carrying a CSS class, in page order (what a browser test would click)."""
        found, stack = [], [self.widget]
        while stack:
            widget = stack.pop(0)
            if css_class in getattr(widget, "_dom_classes", ()):
                found.append(widget)
            stack[:0] = list(getattr(widget, "children", ()))
        return found

    def _ipython_display_(self) -> None:
        """The widget, then the static copy as its own output (nbconvert keeps only the widget of an
        output holding both); the copy is updated as the view changes."""
        from IPython.display import HTML, display

        display(self.widget)
        self._handles.append(display(HTML(self.static_html), display_id=True))

    # ---- plumbing ------------------------------------------------------------------------------

    def _act(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run a click's work; what goes wrong is said in the app, never raised into the notebook."""
        self._say("")
        try:
            return action(*args)
        except KitError as exc:
            self._say(exc.message, error=True)
        except Exception as exc:  # noqa: BLE001 (a click must never leave a traceback behind)
            self.last_error = exc
            self._say(f"kit explorer: unexpected {type(exc).__name__}: {shorten(str(exc), 300)}", error=True)
        return None

    def _say(self, text: str, error: bool = False) -> None:
        if text == self.message == "":
            return
        self.message = text
        colour = "#c62828" if error else "#1b5e20"
        self._message.value = f'<span style="color:{colour}">{html.escape(text)}</span>' if text else ""
        self._update_static()

    def _update_static(self) -> None:
        if self._handles:
            from IPython.display import HTML

            page = HTML(self.static_html)
            for handle in self._handles:
                handle.update(page)

    def _show(self, page: _Page) -> None:
        """Put a built page in place of the last one (whose widgets are closed) and update the static copy."""
        old, self._page = self._page, page
        self._body.children = page.children
        if old is not None:
            _close(old.children, keep={id(self._filters)} | {id(w) for w in page.children})
        self.view = page.view
        self._quiet = True
        try:
            self._nav.value = page.view
        finally:
            self._quiet = False
        self._update_static()

    def _on_nav(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._act(self._go, change["new"])

    def _go(self, view: str) -> None:
        if view == "run" and not self.run_id:
            self._show(self._runs_page())
            self._say("no run is open: click a run in the runs table")
            return
        if view == "step" and not (self.run_id and self.step_id):
            self._show(self._run_page() if self.run_id else self._runs_page())
            self._say("no step is open: click a step in a run's step list")
            return
        self.view = view
        self._show_current()

    def _show_current(self) -> None:
        build = {
            "runs": self._runs_page,
            "run": self._run_page,
            "step": self._run_page,
            "llm": self._llm_page,
            "scenarios": self._scenarios_page,
            "replays": self._replays_page,
            "approvals": self._approvals_page,
        }[self.view]
        if self.view == "runs":
            self._load_facets()
        self._show(build())

    # ---- runs ----------------------------------------------------------------------------------

    def _make_filters(self) -> widgets.Box:
        self._filter = {}
        for name, label, _column in FACETS:
            self._filter[name] = widgets.Dropdown(options=[("any", "")], value="", description=label)
        for name in ("since", "until"):
            self._filter[name] = widgets.Text(
                value="", description=name, placeholder="YYYY-MM-DD[ HH:MM]", continuous_update=False
            )
        for name, box in self._filter.items():
            box.add_class("kit-filter")
            box.add_class(f"kit-filter-{name}")
            box.layout = widgets.Layout(width="280px")
            box.style.description_width = "80px"
            box.observe(self._on_filter, "value")
        boxes = list(self._filter.values())
        return widgets.VBox([widgets.HBox(boxes[:4]), widgets.HBox(boxes[4:])])

    def _load_facets(self) -> None:
        facets = self.history.facets()
        self._quiet = True
        try:
            for name, _label, column in FACETS:
                box = self._filter[name]
                options = [("any", "")] + ([("no scenario", "-")] if name == "scenario" else [])
                options += [(v, v) for v in facets[column]]
                if box.value and box.value not in {v for _, v in options}:
                    options.append((box.value, box.value))
                current = box.value
                box.options = options
                box.value = current
        finally:
            self._quiet = False

    def _on_filter(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._act(self._go, "runs")

    def _open_runs(self, filters: dict[str, str]) -> None:
        unknown = set(filters) - set(self._filter)
        if unknown:
            raise KitError(f"not a filter: {', '.join(sorted(unknown))} (filters: {', '.join(self._filter)})")
        self._load_facets()
        self._quiet = True
        try:
            for name, box in self._filter.items():
                value = filters.get(name, "") or ""
                if isinstance(box, widgets.Dropdown) and value not in {v for _, v in box.options}:
                    box.options = list(box.options) + [(value, value)]
                box.value = value
        finally:
            self._quiet = False
        self.view = "runs"
        self._show(self._runs_page())

    def _filter_values(self) -> dict[str, str | None]:
        values = {name: (box.value or "").strip() or None for name, box in self._filter.items()}
        for name in ("since", "until"):
            if values[name]:
                try:
                    datetime.fromisoformat(values[name])
                except ValueError:
                    raise KitError(f"{name}: {values[name]!r} is not a date or time (YYYY-MM-DD[ HH:MM])") from None
        return values

    def _runs_page(self) -> _Page:
        page = _Page("runs", "runs")
        try:
            chosen = self._filter_values()
        except KitError as exc:  # the filters stay on the page, to be mended
            page.widget(self._filters)
            self._say(exc.message, error=True)
            return page
        runs = self.history.runs(**chosen, limit=RUNS_SHOWN)
        for run in runs:
            run["steps"] = f"{run['done']}/{run['total']}"
        said = ", ".join(f"{k} {v}" for k, v in chosen.items() if v)
        page.widget(self._filters, _p(f"filtered by {said}") if said else "")
        note = f"{len(runs)} run(s), newest first" + (f" (the newest {RUNS_SHOWN})" if len(runs) == RUNS_SHOWN else "")
        if not runs:
            note = "no runs" + (" match these filters" if said else f" in {self.ledger.path} yet")
        page.html(_p(note))
        if runs:
            rows = [
                Row(
                    [r[key] for _, key, _ in RUN_COLUMNS],
                    lambda rid=r["run_id"]: self._act(self._open_run, rid),
                    STATUS_COLOURS.get(r["status"]),
                )
                for r in runs
            ]
            page.widget(*_clickable([(label, w) for label, _, w in RUN_COLUMNS], rows, "kit-run-row"))
        return page

    # ---- a run, and a step in it ----------------------------------------------------------------

    def _open_run(self, run_ref: str) -> None:
        self.run_id, self.step_id, self.view = self.ledger.resolve_run(run_ref), None, "run"
        self._show(self._run_page())

    def _open_step(self, step_id: str, run_ref: str | None) -> None:
        if run_ref is not None:
            self.run_id = self.ledger.resolve_run(run_ref)
        if not self.run_id:
            raise KitError("no run is open: open a run first, or name it")
        if self.ledger.step(self.run_id, step_id) is None:
            names = ", ".join(s["step_id"] for s in self.ledger.steps(self.run_id))
            raise NotFound(f"run {self.run_id} has no step {step_id!r} (steps: {names})")
        self.step_id, self.view = step_id, "step"
        self._show(self._run_page())

    def _run_page(self) -> _Page:
        from kit.review.figures import step_graph, timeline

        run_id, selected = self.run_id, self.step_id if self.view == "step" else None
        run = self.ledger.run(run_id)
        if run is None:
            raise NotFound(f"run {run_id} is no longer in the ledger")
        steps = _graph_order(self.ledger.steps(run_id))
        spans = self.history.spans(run_id)
        page = _Page("step" if selected else "run", f"run {run_id}" + (f" · step {selected}" if selected else ""))
        back = [_button("‹ Runs", "kit-back", lambda: self._act(self._go, "runs"))]
        if selected:
            back.append(_button(f"‹ Run {run_id}", "kit-back", lambda: self._act(self._open_run, run_id)))
        calls = sum(1 for s in spans if s["kind"] == "llm")
        if calls:
            back.append(
                _button(f"LLM calls ({calls})", "kit-open-llm", lambda: self._act(self._open_llm, run_id, None))
            )
        page.widget(widgets.HBox(back))
        page.html(_h(f"run {run_id}") + self._run_summary(run))
        page.svg(step_graph(steps, selected), "kit-step-graph")
        page.svg(timeline(spans, selected), "kit-timeline")
        columns = [("step", 18), ("status", 9), ("attempts", 8), ("ms", 9), ("note", 60)]
        rows = [
            Row(
                [step["step_id"], step["status"], step["attempts"], step["duration_ms"], self._step_note(step)],
                lambda sid=step["step_id"]: self._act(self._open_step, sid, None),
                STATUS_COLOURS.get(step["status"]),
                step["step_id"] == selected,
            )
            for step in steps
        ]
        page.html(_h("steps"))
        page.widget(*_clickable(columns, rows, "kit-step-row"))
        if selected:
            step = next((s for s in steps if s["step_id"] == selected), None)
            if step is None:
                raise NotFound(f"run {run_id} has no step {selected!r} any more")
            self._step_sections(page, run, step, [s for s in spans if s["step_id"] == selected])
        return page

    def _run_summary(self, run: dict[str, Any]) -> str:
        decisions = self.history.decisions(run["run_id"])
        pairs = [
            ("status", _status(run["status"])),
            ("workflow", _e(f"{run['workflow']} {run['version']}")),
            ("as", _e(run["principal"])),
            ("environment", _e(run["env"])),
            ("engine", _e(run.get("engine"))),
            ("started", _e(run["started_at"])),
            ("ended", _e(run["ended_at"])),
            ("seconds", _e(_seconds(run["started_at"], run["ended_at"]))),
            ("parameters", _pre(run["params"] or {})),
            ("scenario", _e(run["scenario_id"])),
            ("baseline of", _e(run["baseline_of"])),
            ("bundle", _e(run["bundle_id"])),
            ("git", _e(run.get("git_commit"))),
            ("error", _e(run.get("error"))),
        ]
        for d in decisions:
            comment = f" ({d['comment']})" if d["comment"] else ""
            pairs.append(
                (f"{d['step_id']}", _e(f"{d['decision']} by {d['principal']} at {cell(d['decided_at'])}{comment}"))
            )
        return _pairs(pairs)

    @staticmethod
    def _step_note(step: dict[str, Any]) -> str:
        """What the step list says beside the status: cached from where, retried, why skipped, the error."""
        notes = []
        if step.get("cached_from"):
            notes.append(f"cached from {step['cached_from']}")
        if (step.get("attempts") or 0) > 1:
            notes.append(f"retried: {step['attempts']} attempts")
        if step.get("error_type"):
            notes.append(f"{step['error_type']}: {step.get('error_message') or ''}")
        if step["status"] == "waiting":
            notes.append(f"waiting for a decision until {cell(step.get('deadline'))}")
        if step.get("reason"):
            notes.append(step["reason"])
        return "; ".join(notes)

    def _step_sections(self, page: _Page, run: dict[str, Any], step: dict[str, Any], spans: list[dict]) -> None:
        """The selected step: parameters, outputs, error, executed notebook, spans, LLM calls."""
        sid = step["step_id"]
        page.html(
            _h(f"step {sid}")
            + _pairs(
                [
                    ("status", _status(step["status"])),
                    ("attempts", _e(step["attempts"])),
                    ("started", _e(step["started_at"])),
                    ("ended", _e(step["ended_at"])),
                    ("ms", _e(step["duration_ms"])),
                    ("cached from", _e(step.get("cached_from"))),
                    ("why", _e(step.get("reason"))),
                    ("waits for", _e(", ".join(step.get("depends_on") or []))),
                    ("notebook", _e(step.get("notebook"))),
                    ("deadline", _e(step.get("deadline")) if step["status"] == "waiting" else ""),
                ]
            )
        )
        if step["status"] == "waiting":
            page.widget(
                _button("Decide in Approvals ›", "kit-open-approvals", lambda: self._act(self._go, "approvals"))
            )

        inputs, note = self._step_inputs(run, sid)
        page.html(
            _h("parameters")
            + (_p(note) if note else "")
            + (
                _table(["input", "from", "value"], [[_e(n), _e(f), _pre(v, 600)] for n, f, v in inputs])
                if inputs
                else ""
            )
        )

        outputs = self.ledger.outputs(run["run_id"], sid)
        if outputs:
            rows = [[_e(o["name"]), _e(o["type"]), self._output_html(o), _e(o["size_bytes"])] for o in outputs]
            page.html(_h("outputs") + _table(["output", "type", "value", "bytes"], rows))

        if step.get("error_type"):
            where = f" in cell {step['error_cell']}" if step.get("error_cell") is not None else ""
            trace = strip_ansi(step.get("traceback") or "")
            page.html(
                _h(f"error{where}")
                + _p(f"{step['error_type']}: {step.get('error_message') or ''}")
                + (_pre(step["error_source"]) if step.get("error_source") else "")
                + (f"<details><summary>traceback</summary>{_pre(trace[-6000:], 6000)}</details>" if trace else "")
            )

        executed = step.get("executed_notebook")
        if executed:
            try:
                link = os.path.relpath(executed)
            except ValueError:
                link = executed
            page.html(
                _h("executed notebook")
                + f'<p><a href="{html.escape(link)}" target="_blank"><code>{html.escape(executed)}</code></a></p>'
            )
            page.widget(_button("Render notebook", "kit-render-notebook", lambda: self._act(self._render_notebook)))
            page.html("", "kit-notebook", slot="notebook")

        shown = [s for s in spans if s["kind"] != "run"][:SPANS_SHOWN]
        if shown:
            rows = [
                [
                    _e(s["kind"]),
                    _e(s["name"]),
                    _e(_seconds(run["started_at"], s["started_at"])),
                    _e(_seconds(s["started_at"], s["ended_at"], 1000)),
                    _e(s["status"]),
                    _e(brief(s["attributes"], 160)),
                ]
                for s in shown
            ]
            columns = ["kind", "name", "s into the run", "ms", "status", "attributes"]
            page.html(_h(f"spans ({len(shown)})") + _table(columns, rows))

        calls = [{**s, "run_id": run["run_id"]} for s in spans if s["kind"] == "llm"]
        if calls:
            page.html(_h("LLM calls"))
            page.widget(*_clickable(LLM_COLUMNS, self._llm_rows(calls, run["run_id"]), "kit-llm-row"))

    def _step_inputs(self, run: dict[str, Any], step_id: str) -> tuple[list[tuple[str, str, Any]], str]:
        """What the step was given, each input with where it came from, as the ledger recorded it
        (redacted): the wiring from the run's own manifest, read from its bundle in the verified store."""
        from kit.spec.manifest import parse_wire
        from kit.spec.policy import REDACTED, Redactor

        params = run["params"] or {}
        try:
            manifest = self._manifest(run["bundle_id"])
        except KitError as exc:  # missing, corrupt or malformed: say so, and show what the run recorded
            manifest, why = None, exc.message
        else:
            why = "the run's bundle is not in the ledger"
        if manifest is None:
            return [(k, "parameter", v) for k, v in params.items()], f"{why}; the run's parameters:"
        spec = (manifest.get("steps") or {}).get(step_id) or {}
        redactor = Redactor((manifest.get("policy") or {}).get("redact") or [])
        outputs = {(o["step_id"], o["name"]): o for o in self.ledger.outputs(run["run_id"])}
        rows = []
        for name, source in (spec.get("inputs") or {}).items():
            wire = parse_wire(source)
            if wire is None:
                came, value = "the manifest", source
            elif wire[0] == "params":
                came, value = f"parameter {wire[1]}", params.get(wire[1])
            else:
                out = outputs.get(wire)
                came = f"output {wire[1]} of step {wire[0]}"
                value = None if out is None else out["artifact"] if out["type"] == "table" else out["value"]
            rows.append((name, came, REDACTED if redactor.matches(name) else value))
        return rows, "" if rows else "no inputs"

    def _manifest(self, bundle_id: str | None) -> dict[str, Any] | None:
        """A bundle's manifest as written, from the verified store (kept: a bundle never changes)."""
        if bundle_id and bundle_id not in self._manifests:
            from kit.base.yamlio import load_yaml

            lock = self.ledger.bundle_lock(bundle_id) or {}
            name = lock.get("manifest") or "workflow.yaml"
            digest = (lock.get("files") or {}).get(name)
            if digest is None:
                return None
            self._manifests[bundle_id] = load_yaml(name, text=self.store.read_bytes(digest).decode()).data or {}
        return self._manifests.get(bundle_id or "")

    def _output_html(self, output: dict[str, Any]) -> str:
        if output["type"] != "table":
            return _pre(output["value"])
        if not output["artifact"]:
            return _p("no artifact recorded")
        try:
            preview = self._table_preview(output["artifact"])
        except KitError as exc:
            return _p(exc.message)
        shown = len(preview["head"])
        return _p(f"{preview['rows']} row(s) × {len(preview['columns'])} column(s); the first {shown}:") + _table(
            preview["columns"], [[_e(row.get(c), 60) for c in preview["columns"]] for row in preview["head"]]
        )

    def _table_preview(self, artifact: str) -> dict[str, Any]:
        """The first rows of a table output, read from its object once re-hashed (never the whole table)."""
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(self.store.verified_path(artifact))
        batch = next(parquet.iter_batches(batch_size=PREVIEW_ROWS), None)
        frame = (batch if batch is not None else parquet.schema_arrow.empty_table()).to_pandas()
        return {**table_preview(frame, head=PREVIEW_ROWS), "rows": parquet.metadata.num_rows}

    def _render_notebook(self) -> None:
        page = self._page
        if page is None or "notebook" not in page.slots or not self.run_id or not self.step_id:
            raise KitError("open a step with an executed notebook first")
        path = Path(self.ledger.step(self.run_id, self.step_id)["executed_notebook"]).resolve()
        home = self.project.home.resolve()
        if not path.is_relative_to(home):
            raise KitError(f"{path} is not under {home}: not rendered")
        if not path.is_file():
            raise KitError(f"{path}: the executed notebook is gone (kit gc?)")
        page.fill("notebook", _notebook_html(path))
        self._update_static()

    # ---- LLM calls -----------------------------------------------------------------------------

    def _open_llm(self, run_ref: str | None, span_id: str | None) -> None:
        self.llm_run = self.ledger.resolve_run(run_ref) if run_ref else None
        self.llm_span, self.view = span_id, "llm"
        self._show(self._llm_page())

    def _llm_page(self) -> _Page:
        calls = self.history.llm_calls(run_id=self.llm_run, limit=CALLS_SHOWN)
        page = _Page("llm", "LLM calls" + (f" of run {self.llm_run}" if self.llm_run else ""))
        scopes = [("all runs", "")] + [(f"run {r}", r) for r in dict.fromkeys([self.llm_run, self.run_id]) if r]
        scope = widgets.Dropdown(options=scopes, value=self.llm_run or "", description="calls of")
        scope.add_class("kit-llm-scope")
        scope.observe(lambda change: self._act(self._open_llm, change["new"] or None, None), "value")
        page.widget(scope, _p(f"calls of {'run ' + self.llm_run if self.llm_run else 'all runs'}, newest first"))
        if calls:
            page.widget(*_clickable(LLM_COLUMNS, self._llm_rows(calls, self.llm_run), "kit-llm-row"))
        else:
            page.html(_p("no LLM calls recorded"))
        chosen = next((c for c in calls if c["span_id"] == self.llm_span), None)
        if self.llm_span and chosen is None:
            page.html(_p(f"call {self.llm_span} is not among the calls shown"))
        if chosen is not None:
            self._llm_call_sections(page, chosen)
        return page

    def _llm_rows(self, calls: list[dict[str, Any]], scope: str | None) -> list[Row]:
        """LLM calls as rows; a click opens the call among the calls of `scope` (a run, or all runs)."""
        rows = []
        for call in calls:
            attrs = call["attributes"] or {}
            values = [
                call["started_at"],
                call["run_id"],
                call["step_id"],
                attrs.get("gen_ai.request.model"),
                attrs.get("gen_ai.usage.input_tokens"),
                attrs.get("gen_ai.usage.output_tokens"),
                attrs.get("latency_ms", attrs.get("duration_ms")),
                _llm_mode(attrs),
            ]
            rows.append(
                Row(
                    values,
                    lambda span_id=call["span_id"]: self._act(self._open_llm, scope, span_id),
                    KIND_COLOURS["llm"] if call["status"] == "ok" else STATUS_COLOURS["failed"],
                    call["span_id"] == self.llm_span and self.view == "llm",
                )
            )
        return rows

    def _llm_call_sections(self, page: _Page, call: dict[str, Any]) -> None:
        from kit.ledger.objects import CorruptObject, MissingObject

        attrs = call["attributes"] or {}
        run_id = call["run_id"]
        page.widget(
            widgets.HBox(
                [
                    _button(f"Run {run_id}", "kit-open-run", lambda: self._act(self._open_run, run_id)),
                    _button(
                        f"Step {call['step_id']}",
                        "kit-open-step",
                        lambda: self._act(self._open_step, call["step_id"], run_id),
                    ),
                ]
            )
        )
        page.html(
            _h(f"LLM call in step {call['step_id']} of run {run_id}")
            + _pairs(
                [
                    ("model", _e(attrs.get("gen_ai.request.model"))),
                    ("provider", _e(attrs.get("gen_ai.provider.name"))),
                    ("tokens in", _e(attrs.get("gen_ai.usage.input_tokens"))),
                    ("tokens out", _e(attrs.get("gen_ai.usage.output_tokens"))),
                    ("latency ms", _e(attrs.get("latency_ms", attrs.get("duration_ms")))),
                    ("answer", _e(_llm_mode(attrs))),
                    ("status", _e(call["status"])),
                    ("finish", _e(attrs.get("gen_ai.response.finish_reasons"))),
                    ("started", _e(call["started_at"])),
                    ("content", _e(attrs.get("kit.llm.content"))),
                ]
            )
        )
        ref = attrs.get("kit.llm.content")
        if not ref:
            page.html(_p("no messages were kept for this call"))
            return
        try:
            body = json.loads(self.store.read_bytes(ref))
        except (MissingObject, CorruptObject) as exc:
            page.html(_p(exc.message))
            return
        request, response = body.get("request") or {}, body.get("response")
        messages = [
            (m.get("role", "?"), m.get("content")) for m in request.get("messages") or [] if isinstance(m, dict)
        ]
        answers = (
            [
                (c["message"].get("role", "assistant"), c["message"].get("content"))
                for c in (response or {}).get("choices") or []
                if isinstance(c, dict) and isinstance(c.get("message"), dict)
            ]
            if isinstance(response, dict)
            else []
        )
        rows = [[_e(role), _pre(content if content is not None else "")] for role, content in messages]
        rows += [[_e(f"{role} (reply)"), _pre(content if content is not None else "")] for role, content in answers]
        page.html(_h("messages") + _table(["role", "content"], rows))
        if not answers and response is not None:
            page.html(_h("response") + _pre(response))

    # ---- scenarios -----------------------------------------------------------------------------

    def _open_scenarios(self, scenario_id: str | None, run_id: str | None) -> None:
        self.scenario_id, self.scenario_run, self.view = scenario_id, run_id, "scenarios"
        self._show(self._scenarios_page())

    def _matrix(self, cells: list[dict[str, Any]]) -> str:
        """The verdict matrix's SVG, drawn again only when a verdict changed (matplotlib takes its time)."""
        from kit.review.figures import verdict_matrix

        key = tuple((c["scenario_id"], c["run_id"], c["verdict"]) for c in cells)
        if self._drawn_matrix[0] != key:
            self._drawn_matrix = (key, verdict_matrix(cells))
        return self._drawn_matrix[1]

    def _scenarios_page(self) -> _Page:
        cells = self.history.scenario_runs(last=SCENARIO_RUNS)
        page = _Page("scenarios", "scenarios" + (f" · {self.scenario_id}" if self.scenario_id else ""))
        if not cells:
            page.html(_p("no scenario has run yet (kit test)"))
            return page
        by_scenario: dict[str, list[dict[str, Any]]] = {}
        for c in cells:
            by_scenario.setdefault(c["scenario_id"], []).append(c)
        trends = {name: _trend([c["verdict"] for c in history]) for name, history in by_scenario.items()}
        # the ones that need a look first: regressed or flaky, then failing; each group most recently run first
        ranked = sorted(by_scenario, key=lambda name: by_scenario[name][-1]["run_id"], reverse=True)
        ranked.sort(
            key=lambda name: (trends[name] not in ("regressed", "flaky"), by_scenario[name][-1]["verdict"] == "pass")
        )
        drawn = set(ranked[:MATRIX_SCENARIOS])
        title = f"the last {SCENARIO_RUNS} runs of each scenario (R regressed, F fixed, ~ flaky)"
        if len(drawn) < len(by_scenario):
            title += f"; drawn: {len(drawn)} of {len(by_scenario)}, regressed, flaky and failing first"
        page.html(_h(title))
        page.svg(self._matrix([c for c in cells if c["scenario_id"] in drawn]), "kit-verdict-matrix")
        rows = [
            [
                _e(name),
                _e(len(by_scenario[name])),
                _e(sum(c["verdict"] == "pass" for c in by_scenario[name])),
                _verdict(by_scenario[name][-1]["verdict"]),
                _e(trends[name]),
                _e(by_scenario[name][-1]["run_id"]),
            ]
            for name in ranked[:SCENARIOS_LISTED]
        ]
        page.html(_table(["scenario", "runs", "passed", "last", "trend", "last run"], rows, "kit-scenarios"))

        scenario = self.scenario_id if self.scenario_id in by_scenario else None
        pick = widgets.Dropdown(
            options=[("choose a scenario", "")] + [(s, s) for s in sorted(by_scenario)],
            value=scenario or "",
            description="scenario",
            layout=widgets.Layout(width="520px"),
        )
        pick.add_class("kit-scenario-select")
        pick.observe(lambda change: self._act(self._open_scenarios, change["new"] or None, None), "value")
        history = list(reversed(by_scenario.get(scenario, [])))  # newest first
        run_id = self.scenario_run or (history[0]["run_id"] if history else None)
        runs = widgets.Dropdown(
            options=[
                (f"{c['run_id']} · {c['verdict']} · {c['passed']}/{c['expectations']}", c["run_id"]) for c in history
            ]
            or [("", "")],
            value=run_id if history else "",
            description="run",
            layout=widgets.Layout(width="520px"),
        )
        runs.add_class("kit-scenario-run-select")
        runs.observe(lambda change: self._act(self._open_scenarios, scenario, change["new"] or None), "value")
        page.widget(widgets.VBox([pick, runs]))
        if scenario and run_id:
            comparisons = self.history.comparisons(run_id=run_id, scenario_id=scenario)
            page.widget(_button(f"Open run {run_id}", "kit-open-run", lambda: self._act(self._open_run, run_id)))
            rows = [
                [
                    _e(c["expectation"])
                    + (f"<br><small>{_e(c['scenario_file'])}:{_e(c['line'])}</small>" if c["line"] else ""),
                    _e(c["comparator"]),
                    _verdict(c["verdict"]),
                    _pre(c["expected"], 1500),
                    _pre(c["actual"], 1500),
                    _pre(c["detail"] or "", 1500),
                ]
                for c in comparisons
            ]
            page.html(
                _h(f"{scenario} in run {run_id}")
                + _table(
                    ["expectation", "comparator", "verdict", "expected", "actual", "detail"], rows, "kit-comparisons"
                )
            )
        return page

    # ---- replays -------------------------------------------------------------------------------

    def _open_replays(self, baseline_run: str | None) -> None:
        self.replay_run, self.view = baseline_run, "replays"
        self._show(self._replays_page())

    def _replays_page(self) -> _Page:
        replays = self.history.replays()
        page = _Page("replays", "replays" + (f" · baseline {self.replay_run}" if self.replay_run else ""))
        if not replays:
            page.html(_p("no replays yet (kit replay SCENARIO --baseline REF)"))
            return page
        columns = [("started", 19), ("scenario", 36), ("baseline run", 37), ("current run", 37), ("bundles", 27)]
        rows = [
            Row(
                [
                    r["started_at"],
                    r["scenario_id"],
                    r["baseline_run"],
                    r["current_run"],
                    f"{(r['baseline_bundle'] or '')[:12]} → {(r['current_bundle'] or '')[:12]}",
                ],
                lambda b=r["baseline_run"]: self._act(self._open_replays, b),
                KIND_COLOURS["step"],
                r["baseline_run"] == self.replay_run,
            )
            for r in replays
        ]
        page.widget(*_clickable(columns, rows, "kit-replay-row"))
        chosen = next((r for r in replays if r["baseline_run"] == self.replay_run), None)
        if chosen is not None:
            self._replay_sections(page, chosen)
        return page

    def _replay_sections(self, page: _Page, replay: dict[str, Any]) -> None:
        from kit.verification.replay import CLASSES, ExpectationReplay

        old = {c["expectation"]: c for c in self.history.comparisons(run_id=replay["baseline_run"])}
        new = {c["expectation"]: c for c in self.history.comparisons(run_id=replay["current_run"])}
        expectations = []
        for key in list(new) + [k for k in old if k not in new]:
            a, b = old.get(key) or {}, new.get(key) or {}
            either = b or a
            expectations.append(
                ExpectationReplay(
                    key=key,
                    comparator=either.get("comparator"),
                    expected=either.get("expected"),
                    old=a.get("actual"),
                    current=b.get("actual"),
                    old_verdict=a.get("verdict") or "missing",
                    current_verdict=b.get("verdict") or "missing",
                    detail=b.get("detail") or "",
                )
            )
        baseline, current = replay["baseline_run"], replay["current_run"]
        page.widget(
            widgets.HBox(
                [
                    _button(f"Baseline run {baseline}", "kit-open-run", lambda: self._act(self._open_run, baseline)),
                    _button(f"Current run {current}", "kit-open-run", lambda: self._act(self._open_run, current)),
                ]
            )
        )
        totals = ", ".join(f"{sum(e.classification == c for e in expectations)} {c}" for c in CLASSES)
        rows = [
            [
                _e(e.key) + f"<br><small>{_e(e.comparator)}</small>",
                _e(e.classification + (" (changed)" if e.changed and e.classification == "still-passing" else "")),
                _pre(e.expected, 1500),
                _verdict(e.old_verdict) + _pre(e.old, 1500),
                _verdict(e.current_verdict) + _pre(e.current, 1500),
                _pre(e.detail, 1500),
            ]
            for e in expectations
        ]
        page.html(
            _h(f"{replay['scenario_id']}: {totals}")
            + _table(["expectation", "change", "expected", "baseline", "current", "detail"], rows, "kit-replay")
        )

    # ---- approvals -----------------------------------------------------------------------------

    def _approvals_page(self) -> _Page:
        pending = self.history.pending_approvals()
        page = _Page("approvals", "approvals")
        page.html(
            _p(
                f"deciding as {self.principal} (kit.explore(as_=...), else KIT_PRINCIPAL, else the OS user); "
                "the same policy and audit as kit approve"
            )
        )
        if not pending:
            page.html(_p("no decision is pending"))
            return page
        comment = widgets.Textarea(placeholder="a comment, recorded with the decision", description="comment")
        comment.add_class("kit-approval-comment")
        comment.layout = widgets.Layout(width="520px")
        page.widget(comment)
        now = clock_now()
        static_rows = []
        for p in pending:
            run_id, step_id = p["run_id"], p["step_id"]
            overdue = p["deadline"] is not None and p["deadline"] < now
            text = (
                f"{step_id} of run {run_id} · {p['workflow']} {p['version']} · started by {p['started_by']} · "
                f"env {p['env'] or '-'} · waiting since {cell(p['waiting_since'])}"
                + (f" · deadline {cell(p['deadline'])}" + (" (overdue)" if overdue else "") if p["deadline"] else "")
            )
            row = widgets.HBox(
                [
                    widgets.HTML(html.escape(text), layout=widgets.Layout(width="auto", flex="1 1 auto")),
                    _button("Open run", "kit-open-run", lambda r=run_id: self._act(self._open_run, r)),
                    _button(
                        "Approve",
                        "kit-approve",
                        lambda r=run_id, s=step_id: self._act(self._decide, r, s, False, comment.value),
                        button_style="success",
                        tooltip=f"approve {step_id} of run {run_id} as {self.principal}",
                    ),
                    _button(
                        "Reject",
                        "kit-reject",
                        lambda r=run_id, s=step_id: self._act(self._decide, r, s, True, comment.value),
                        button_style="danger",
                        tooltip=f"reject {step_id} of run {run_id} as {self.principal}",
                    ),
                ]
            )
            row.add_class("kit-approval-row")
            page.widget(row)
            static_rows.append(
                [
                    _e(run_id),
                    _e(step_id),
                    _e(f"{p['workflow']} {p['version']}"),
                    _e(p["started_by"]),
                    _e(p["env"]),
                    _e(p["waiting_since"]),
                    _e(p["deadline"]) + (" (overdue)" if overdue else ""),
                ]
            )
        page.static(
            _table(
                ["run", "step", "workflow", "started by", "env", "waiting since", "deadline"],
                static_rows,
                "kit-pending",
            )
        )
        return page

    def _decide(self, run_ref: str, step_id: str, reject: bool, comment: str | None) -> str | None:
        """A decision through `Approvals.decide` (policy, four eyes, audit); a refusal is said, not raised."""
        from kit.errors import InvalidInput, PermissionDenied
        from kit.execution.approvals import Approvals

        run_id = self.ledger.resolve_run(run_ref)
        try:
            decision = Approvals(self.project, self.ledger).decide(
                run_id, step_id, self.principal, reject=reject, comment=(comment or "").strip() or None
            )
        except (PermissionDenied, InvalidInput) as exc:
            self.view = "approvals"
            self._show(self._approvals_page())
            self._say(f"refused: {exc.message}", error=True)
            return None
        self.view = "approvals"
        self._show(self._approvals_page())
        if decision == "approved":
            self._say(f"{step_id} approved by {self.principal} in run {run_id}; continue: kit resume {run_id}")
        else:
            self._say(f"{step_id} rejected by {self.principal}: run {run_id} ended rejected")
        return decision


def _close(items: Iterable[widgets.Widget], keep: set[int]) -> None:
    """Close widgets a page no longer shows (and their children), so their comms do not pile up."""
    for widget in items:
        if id(widget) in keep:
            continue
        _close(getattr(widget, "children", ()), keep)
        widget.close()
