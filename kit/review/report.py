"""The HTML report of a run or of scenarios (`kit report`, `kit test --report`): one file, built
from the ledger alone (nothing reruns), that opens anywhere and can be mailed or attached to CI.

- **Self-contained.** No CDN, no network: the figures are inline SVG (`kit.review.figures`, their
  namespace and RDF metadata removed), the notebooks go through nbconvert's `basic` template
  (no require.js, no MathJax) and then through `sanitize_html`, which keeps only references inside
  the page (``#anchors`` and ``data:image/`` URIs) and drops scripts, frames, event handlers and
  CSS ``url()``. Every ``://`` left in text (a URL a user printed) is written ``:&#47;&#47;``:
  the same on screen, never a literal reference in the file.
- **Escaped.** Jinja2 with autoescape on: every value from the ledger is text; only the sanitized
  notebooks and the figures kit drew are markup.
- **Redacted once more.** The ledger and the executed notebooks are already redacted; the run's
  `policy.redact` patterns, read from its bundle's manifest in the object store (re-hashed), are
  applied again to parameters, outputs and comparisons, and notebook and error text goes through
  the same redactor (it knows no secret values: the ledger keeps none, by design). Only files under
  `.kit/runs` are ever embedded.
- **Deterministic.** The same ledger gives the same bytes: no generation time, every list in a
  stable order, byte-identical SVG, notebook outputs that render with random ids (JavaScript,
  widget views) left out.
- **Small.** A report of 1,000 scenarios stays under 5 MB (bench/report_size.py): a passing
  scenario is collapsed, a line per expectation with a brief of its actual value; the first `FULL`
  failing scenarios show each failure's expected and actual in full, the others a line per failure;
  only the first `DEPTH` failing scenarios carry their step graph, timeline and the executed
  notebooks of the steps that failed or whose expectations did (a run's report embeds all its
  notebooks); the verdict matrix draws at most `MATRIX_ROWS` scenarios, those that did not always
  pass first; a notebook is embedded up to `NOTEBOOK_CHARS` (a bigger one is named, with its path).
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Iterable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from kit.base.display import ELLIPSIS, brief, cell, shorten, strip_ansi
from kit.errors import NotFound
from kit.spec.policy import Redactor

TEMPLATES = Path(__file__).parent / "templates"
DEPTH = 10  # failing scenarios shown with their graph, timeline and notebooks
FULL = 100  # failing scenarios shown with expected and actual in full (the others a line per failure)
MATRIX_ROWS = 100  # scenarios the verdict matrix draws
NOTEBOOK_CHARS = 300_000  # a notebook's HTML beyond this is named, not embedded
VALUE_CHARS = 4_000  # an expected or actual value shown in full up to this
TABLE_ROWS = 10  # rows of a table output shown

# ---- rendering ---------------------------------------------------------------------


def defang(text: str) -> str:
    """`text` (escaped HTML) with every ``://`` written as a character reference: a browser shows the
    same URL, and the file holds no literal ``http://`` a checker or a proxy could take for a reference."""
    return text.replace("://", ":&#47;&#47;")


def _finalize(value: Any):
    """Every ``{{ value }}`` is escaped text, defanged; markup kit made itself (figures, sanitized
    notebooks) passes as it is."""
    from markupsafe import Markup, escape

    if isinstance(value, Markup):
        return value
    return Markup(defang(str(escape("" if value is None else value))))


def pretty(value: Any, limit: int = VALUE_CHARS) -> str:
    """A value as indented JSON, cut to `limit` characters."""
    text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def is_table_preview(value: Any) -> bool:
    """A table as kit keeps it in comparisons and shows it (`kit.base.values.table_preview`)."""
    return isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("head"), list)


def exact(value: Any, limit: int = 120) -> str:
    """A table cell as it is (numbers to the last digit: a diff of 320.31 and 320.3 must show), cut."""
    if value is None:
        return ""
    return shorten(value, limit) if isinstance(value, str) else brief(value, limit)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@functools.cache
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        finalize=_finalize,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(pretty=pretty, brief=brief, cell=cell, exact=exact, duration=duration)
    env.tests["table_preview"] = is_table_preview
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_report(path: str | Path, text: str) -> int:
    """Write the report (UTF-8, no newline translation: the same bytes on every system); its size."""
    data = text.encode("utf-8")
    Path(path).write_bytes(data)
    return len(data)


# ---- markup from elsewhere: notebooks and figures -------------------------------------

_DROPPED = frozenset(
    "script iframe object embed applet frame frameset link base meta form noscript template audio video "
    "source track portal param".split()
)
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())
_URL_ATTRIBUTES = frozenset(
    "src href xlink:href srcset imagesrcset action formaction poster background cite longdesc usemap ping "
    "data codebase archive manifest profile lowsrc dynsrc".split()
)
_CSS_URL = re.compile(r"url\(\s*(?!['\"]?data:image/)[^)]*\)", re.IGNORECASE)
_CSS_IMPORT = re.compile(r"@import[^;]*;?", re.IGNORECASE)


def _clean_css(css: str) -> str:
    return _CSS_IMPORT.sub("", _CSS_URL.sub("none", css)).replace("://", ":\\2f\\2f").replace("</", "<\\/")


def _kept_reference(value: str) -> bool:
    """A reference inside the page: an anchor, or an image held in the attribute itself."""
    value = value.strip().lower()
    return value.startswith("#") or value.startswith("data:image/")


class _Sanitizer(HTMLParser):
    """HTML rewritten so that it references nothing outside the page and runs no code."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping: list[str] = []  # dropped elements still open (their content goes too)
        self.style = False

    def _attributes(self, attrs: list[tuple[str, str | None]]) -> str:
        kept = []
        for name, value in attrs:
            name = name.lower()
            if name.startswith("on") or name == "xmlns" or name.startswith("xmlns:") or name == "srcdoc":
                continue
            if value is None:
                kept.append(f" {name}")
                continue
            if name in _URL_ATTRIBUTES and not _kept_reference(value):
                continue
            if name == "style":
                value = _clean_css(value)
            kept.append(f' {name}="{defang(html.escape(value, quote=True))}"')
        return "".join(kept)

    @staticmethod
    def _dropped(tag: str, attrs) -> bool:
        """Elements that load or run something, and images whose source was outside."""
        if tag == "img":
            return not any(name == "src" and _kept_reference(value or "") for name, value in attrs)
        return tag in _DROPPED

    def handle_starttag(self, tag: str, attrs, close: str = "") -> None:
        if self.skipping:
            if tag == self.skipping[-1] and not close:
                self.skipping.append(tag)
            return
        if self._dropped(tag, attrs):
            if tag not in _VOID and not close:
                self.skipping.append(tag)
            return
        self.style = tag == "style" and not close
        self.out.append(f"<{tag}{self._attributes(attrs)}{close}>")

    def handle_startendtag(self, tag: str, attrs) -> None:
        self.handle_starttag(tag, attrs, close="/")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag in _DROPPED:
            return
        self.style = False
        self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        self.out.append(_clean_css(data) if self.style else defang(html.escape(data, quote=False)))


def sanitize_html(text: str) -> str:
    """HTML (a notebook's export, an output's text/html) without scripts, frames, event handlers,
    comments or any reference outside the page; the rest (tables, images as data URIs, styles) stays."""
    parser = _Sanitizer()
    parser.feed(text)
    parser.close()
    return "".join(parser.out)


_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_SVG_NAMESPACE = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


def inline_svg(svg: str):
    """A figure ready to sit inside HTML: HTML gives inline SVG its namespaces, so the declarations (and
    matplotlib's RDF metadata, all URLs) go."""
    from markupsafe import Markup

    return Markup(_SVG_NAMESPACE.sub("", _SVG_METADATA.sub("", svg)))


def read_executed(runs_dir: Path, path: str | None, redactor: Redactor):
    """A step's executed notebook, read only from the project's `.kit/runs` (nothing else is ever shown)
    and through its run's redaction once more: ``(notebook, "")``, or ``(None, why not)``."""
    import nbformat

    from kit.base.paths import OutsideRoot, inside

    if not path:
        return None, "no executed notebook"
    try:
        file = inside(runs_dir, path)
    except OutsideRoot:
        return None, f"{path} is outside {runs_dir}"
    if not file.is_file():
        return None, f"{path} is gone"
    try:
        return nbformat.reads(redactor.text(file.read_text(encoding="utf-8")), as_version=4), ""
    except Exception as exc:  # noqa: BLE001 - a damaged notebook is said, not a crash
        return None, f"{path} is not a readable notebook ({exc})"


class Notebooks:
    """Executed notebooks as sanitized HTML. The exporter is made once per report."""

    #: Outputs that render with a fresh random id (or need a widget manager): never the same bytes twice.
    VOLATILE = ("application/javascript", "application/vnd.jupyter.widget-view+json")

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.embedded = 0

    @functools.cached_property
    def exporter(self):
        from nbconvert import HTMLExporter

        return HTMLExporter(template_name="basic")

    def render(self, path: str | None, redactor: Redactor) -> dict[str, Any]:
        """``{"html": markup}``, or ``{"note": why not}``."""
        from markupsafe import Markup

        nb, why = read_executed(self.runs_dir, path, redactor)
        if nb is None:
            return {"note": f"not embedded: {why}"}
        nb.metadata.pop("widgets", None)
        for c in nb.cells:
            if "outputs" in c:
                for output in c.outputs:
                    for mime in self.VOLATILE:
                        output.get("data", {}).pop(mime, None)
                c.outputs = [o for o in c.outputs if "data" not in o or o["data"]]
        body, _ = self.exporter.from_notebook_node(nb)
        if len(body) > NOTEBOOK_CHARS:
            return {"note": f"not embedded: {path} renders to {len(body) / 1e6:.1f} MB (more than a report keeps)"}
        self.embedded += 1
        return {"html": Markup(sanitize_html(body))}

    def css(self) -> str:
        """Syntax colours for the embedded code cells (pygments comes with nbconvert)."""
        from markupsafe import Markup

        if not self.embedded:
            return ""
        from pygments.formatters import HtmlFormatter

        return Markup(_clean_css(HtmlFormatter(style="default").get_style_defs(".highlight")))


# ---- reading the ledger ----------------------------------------------------------------


def graph_order(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps with each after the steps it depends on (the figure's layers need it), ties in ledger order."""
    import graphlib

    by_id = {s["step_id"]: s for s in steps}
    sorter = graphlib.TopologicalSorter(
        {sid: [d for d in s.get("depends_on") or [] if d in by_id] for sid, s in by_id.items()}
    )
    try:
        return [by_id[sid] for sid in sorter.static_order()]
    except graphlib.CycleError:  # not from kit; draw them as they are
        return list(steps)


def split_key(key: str) -> tuple[str, str]:
    """An expectation key as its step and the rest (`recommend.decision.action` -> recommend, decision.action)."""
    step, _, rest = key.partition(".")
    return step, rest


class Reader:
    """What a report reads: the ledger (through `History` and `Ledger`), objects (re-hashed), notebooks."""

    def __init__(self, project, ledger):
        from kit.ledger.history import History
        from kit.ledger.objects import ObjectStore

        self.project, self.ledger = project, ledger
        self.history = History(ledger)
        self.store = ObjectStore(project.objects_dir)
        self.notebooks = Notebooks(project.runs_dir)
        self._redactors: dict[str | None, Redactor] = {}

    def redactor(self, bundle_id: str | None) -> Redactor:
        """The run's redaction: `policy.redact` of the manifest its bundle snapshot holds."""
        if bundle_id not in self._redactors:
            self._redactors[bundle_id] = Redactor(self._patterns(bundle_id))
        return self._redactors[bundle_id]

    def _patterns(self, bundle_id: str | None) -> list[str]:
        import yaml

        lock = self.ledger.bundle_lock(bundle_id) if bundle_id else None
        digest = (lock or {}).get("files", {}).get((lock or {}).get("manifest", "workflow.yaml"))
        if not digest:
            return []
        from kit.ledger.objects import CorruptObject, MissingObject

        try:
            manifest = yaml.safe_load(self.store.read_bytes(digest))  # re-hashed first
        except MissingObject:  # collected: the ledger's own redaction stands
            return []
        except CorruptObject as exc:  # refused, naming who made it
            raise exc.made_by(self.ledger.object_origin(digest)) from None
        policy = manifest.get("policy") if isinstance(manifest, dict) else None
        patterns = policy.get("redact") if isinstance(policy, dict) else None
        return [p for p in patterns or [] if isinstance(p, str)]

    def table(self, ref: str, redactor: Redactor) -> dict[str, Any]:
        """A table output's preview (its first rows), read from its object after re-hashing it."""
        import pandas as pd

        from kit.base.values import table_preview
        from kit.errors import KitError

        try:
            frame = pd.read_parquet(self.store.verified_path(ref))
        except KitError as exc:
            return {"note": f"cannot show the table: {exc.message}"}
        return redactor.value(table_preview(frame, head=TABLE_ROWS))

    def figures(self, run_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
        from kit.review import figures

        return {
            "graph": inline_svg(figures.step_graph(graph_order(steps))),
            "timeline": inline_svg(figures.timeline(self.history.spans(run_id))),
        }


def expectation_view(row: dict[str, Any], redactor: Redactor, root: Path) -> dict[str, Any]:
    step, rest = split_key(row["expectation"])
    where = ""
    if row.get("scenario_file"):
        file = Path(row["scenario_file"])
        where = f"{file.relative_to(root) if file.is_relative_to(root) else file}:{row['line']}"
    return {
        "key": row["expectation"],
        "step": step,
        "rest": rest,
        "comparator": row["comparator"],
        "verdict": row["verdict"],
        "expected": redactor.value(row["expected"]),
        "actual": redactor.value(row["actual"]),
        "detail": redactor.text(row["detail"] or ""),
        "where": where,
    }


def grouped(expectations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expectations by step, steps in the order their first expectation comes."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in expectations:
        groups.setdefault(e["step"], []).append(e)
    return [
        {"step": step, "items": items, "failed": sum(1 for e in items if e["verdict"] != "pass")}
        for step, items in groups.items()
    ]


def scenario_verdict(verdicts: Iterable[str], run_status: str | None) -> str:
    """A scenario run's verdict as `kit test` judges it: a failed run fails even when its checks pass."""
    verdicts = set(verdicts)
    if "error" in verdicts:
        return "error"
    if "fail" in verdicts or run_status == "failed":
        return "fail"
    return "pass"


def step_view(step: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """A step's row, with its error texts redacted and without terminal colours."""
    view = dict(step)
    for field in ("error_message", "error_source", "traceback", "reason"):
        view[field] = strip_ansi(redactor.text(step.get(field) or "") or "")
    return view


def _seconds(row: dict[str, Any]) -> float | None:
    if row.get("started_at") and row.get("ended_at"):
        return (row["ended_at"] - row["started_at"]).total_seconds()
    return None


def _counts(values: Iterable[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sorted(counts.items())


def _matrix(reader: Reader, scenario_ids: list[str], last: int) -> dict[str, Any]:
    """The verdict matrix over each scenario's last runs; rows beyond `MATRIX_ROWS` are said, not drawn."""
    from kit.review import figures

    if not scenario_ids:
        return {"svg": None, "left_out": 0, "always_passed": 0}
    cells = reader.history.scenario_runs(last=last, scenarios=scenario_ids)
    for c in cells:
        if c["verdict"] == "pass" and c["run_status"] == "failed":
            c["verdict"] = "fail"
    by_scenario: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_scenario.setdefault(c["scenario_id"], []).append(c)
    names = sorted(by_scenario)
    always = {n for n in names if all(c["verdict"] == "pass" for c in by_scenario[n])}
    if len(names) > MATRIX_ROWS:  # the scenarios that did not always pass are the ones to see
        names = [n for n in names if n not in always] + [n for n in names if n in always]
    drawn = sorted(names[:MATRIX_ROWS])
    svg = figures.verdict_matrix([c for n in drawn for c in by_scenario[n]]) if drawn else None
    return {
        "svg": inline_svg(svg) if svg else None,
        "drawn": len(drawn),
        "left_out": len(by_scenario) - len(drawn),
        "always_passed": len(always - set(drawn)),
        "last": last,
    }


# ---- the run report -------------------------------------------------------------------


def run_report(project, ledger, run_id: str, last: int = 10) -> str:
    """One run: verdict and counts, its checks if it is a scenario's, its graph and timeline, each
    step with its error, outputs, LLM calls and executed notebook, its approvals."""
    reader = Reader(project, ledger)
    run = ledger.run(run_id)
    redactor = reader.redactor(run["bundle_id"])
    run = dict(run, params=redactor.named(run["params"] or {}), error=redactor.text(run.get("error")))
    steps = ledger.steps(run_id)
    outputs: dict[str, list[dict[str, Any]]] = {}
    for out in ledger.outputs(run_id):
        shown = {"name": out["name"], "type": out["type"], "size_bytes": out["size_bytes"]}
        if redactor.matches(out["name"]):
            shown["value"] = "[REDACTED]"
        elif out["artifact"] and out["type"] == "table":
            shown["table"] = reader.table(out["artifact"], redactor)
        else:
            shown["value"] = redactor.value(out["value"])
        outputs.setdefault(out["step_id"], []).append(shown)
    llm: dict[str, list[dict[str, Any]]] = {}
    for call in reversed(reader.history.llm_calls(run_id, limit=1000)):
        a = call["attributes"] or {}
        llm.setdefault(call["step_id"], []).append(
            {
                "model": a.get("gen_ai.request.model"),
                "provider": a.get("gen_ai.provider.name"),
                "tokens_in": a.get("gen_ai.usage.input_tokens"),
                "tokens_out": a.get("gen_ai.usage.output_tokens"),
                "latency_ms": a.get("latency_ms"),
                "mode": "replayed" if a.get("kit.llm.replayed") else a.get("kit.llm.mode"),
                "status": call["status"],
            }
        )
    step_views = []
    for step in steps:
        view = step_view(step, redactor)
        view["outputs"] = outputs.get(step["step_id"], [])
        view["llm"] = llm.get(step["step_id"], [])
        view["notebook"] = step["executed_notebook"] and reader.notebooks.render(step["executed_notebook"], redactor)
        step_views.append(view)
    checks = [expectation_view(r, redactor, project.root) for r in reader.history.comparisons(run_id=run_id)]
    verdict = run["status"]
    if run["scenario_id"] and checks:
        verdict = scenario_verdict((c["verdict"] for c in checks), run["status"])
    return render(
        "run.html.j2",
        title=f"kit report: run {run_id}",
        run=run,
        seconds=_seconds(run),
        verdict=verdict,
        step_counts=_counts(s["status"] for s in steps),
        checks={
            "total": len(checks),
            "passed": sum(1 for c in checks if c["verdict"] == "pass"),
            "groups": grouped(checks),
        },
        figures=reader.figures(run_id, steps),
        steps=step_views,
        decisions=reader.history.decisions(run_id),
        matrix=_matrix(reader, [run["scenario_id"]], last) if run["scenario_id"] else None,
        notebook_css=reader.notebooks.css(),
    )


# ---- the scenarios report ---------------------------------------------------------------


def scenarios_report(
    project,
    ledger,
    scenarios: Sequence[str] | None = None,
    run_ids: Sequence[str] | None = None,
    last: int = 10,
    invalid: Sequence[tuple[str, str]] = (),
    missing: Sequence[str] = (),
) -> str:
    """Scenarios: each one's latest run (or the runs `run_ids` names, e.g. a suite's just now), failures
    first and expanded, passes collapsed, grouped scenario, step, expectation; the verdict matrix over
    each scenario's last `last` runs. `scenarios` None means every scenario the ledger has run;
    `invalid` are scenario files that could not run (path, why), `missing` scenarios never run."""
    reader = Reader(project, ledger)
    history = reader.history
    if run_ids is None:
        named = list(scenarios) if scenarios is not None else None
        cells = history.scenario_runs(last=1, scenarios=named) if named != [] else []
        latest = {c["scenario_id"]: c["run_id"] for c in cells}
        chosen = sorted(latest.values())
        if scenarios is not None:
            missing = sorted(set(missing) | (set(scenarios) - set(latest)))
    else:
        chosen = sorted(set(run_ids))
    runs = {r["run_id"]: r for r in history.runs_of(chosen)} if chosen else {}
    steps: dict[str, list[dict[str, Any]]] = {}
    for s in history.steps_of(chosen) if chosen else []:
        steps.setdefault(s["run_id"], []).append(s)
    checks: dict[str, list[dict[str, Any]]] = {}
    for c in history.comparisons_of(chosen) if chosen else []:
        checks.setdefault(c["run_id"], []).append(c)

    views = []
    for run_id, run in runs.items():
        if not run["scenario_id"]:
            continue
        redactor = reader.redactor(run["bundle_id"])
        items = [expectation_view(c, redactor, project.root) for c in checks.get(run_id, [])]
        run_steps = steps.get(run_id, [])
        views.append(
            {
                "id": run["scenario_id"],
                "workflow": run["workflow"],
                "verdict": scenario_verdict((e["verdict"] for e in items), run["status"]),
                "run": dict(run, params=redactor.named(run["params"] or {})),
                "seconds": _seconds(run),
                "total": len(items),
                "passed": sum(1 for e in items if e["verdict"] == "pass"),
                "groups": grouped(items),
                "failed_steps": [step_view(s, redactor) for s in run_steps if s["status"] == "failed"],
                "steps": run_steps,
                "redactor": redactor,
            }
        )
    if not views and not invalid and not missing:
        raise NotFound(f"no scenario has run in {ledger.path}: `kit test` runs them")
    views.sort(key=lambda v: (v["id"], v["run"]["run_id"]))
    failing = [v for v in views if v["verdict"] != "pass"]
    passing = [v for v in views if v["verdict"] == "pass"]
    for i, view in enumerate(failing + passing):
        view["compact"] = i >= FULL or view["verdict"] == "pass"
    for view in failing[:DEPTH]:  # in depth: graph, timeline, and the notebooks of the steps that failed
        view.update(reader.figures(view["run"]["run_id"], view["steps"]))
        involved = {g["step"] for g in view["groups"] if g["failed"]} | {s["step_id"] for s in view["failed_steps"]}
        view["notebooks"] = [
            {"step": s["step_id"], **reader.notebooks.render(s["executed_notebook"], view["redactor"])}
            for s in view["steps"]
            if s["step_id"] in involved and s["executed_notebook"]
        ]
    workflows: dict[str, list[int]] = {}
    for view in views:
        counts = workflows.setdefault(view["workflow"], [0, 0])
        counts[0] += view["verdict"] == "pass"
        counts[1] += 1
    started = [v["run"]["started_at"] for v in views if v["run"]["started_at"]]
    return render(
        "scenarios.html.j2",
        title="kit report: scenarios",
        verdict="pass" if views and not failing and not invalid else "fail",
        counts=_counts([v["verdict"] for v in views] + ["invalid"] * len(invalid) + ["not run"] * len(missing)),
        expectations={
            "total": sum(v["total"] for v in views),
            "passed": sum(v["passed"] for v in views),
        },
        workflows=sorted(workflows.items()),
        window=(min(started), max(started)) if started else None,
        failing=failing,
        passing=passing,
        invalid=sorted(invalid),
        missing=sorted(missing),
        depth=DEPTH,
        full=FULL,
        matrix=_matrix(reader, sorted({v["id"] for v in views}), last),
        notebook_css=reader.notebooks.css(),
    )
