"""The HTML report (`kit report`, `kit test --report`): built from real runs in a real ledger.

The casework example and two of its scenarios (one made to fail: a table that differs by a row
and a value, a count, and an expected value holding `<script>`) run once per module on the warm
engine; each test reads the report files or builds more from the same ledger.
"""

from __future__ import annotations

import re
import textwrap

import pytest
from conftest import Project, copy_example

from kit.review.report import sanitize_html

FAST = ("--engine", "warm", "--workers", "1")
PASSING = "scenarios/casework/C-1001-missing-loyalty-discount.yaml"
FAILING = "scenarios/casework/C-1002-double-charge.yaml"
EXTERNAL = re.compile(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
# an attribute that can load or link something, pointing anywhere but the page itself
OUTSIDE_ATTRIBUTE = re.compile(r"<[a-z][^>]*\s(?:src|href|srcset|xlink:href|action|data)=\"(?!#|data:image/)", re.I)


def _references(text: str) -> list[str]:
    """Every http(s) URL in the file, wherever it is (scripts, links, styles, images, text)."""
    return re.findall(r"https?://\S{0,40}", text)


def _self_contained(html: str) -> None:
    assert _references(html) == []
    assert "<script" not in html and "<link" not in html and "<iframe" not in html
    assert not OUTSIDE_ATTRIBUTE.search(html), OUTSIDE_ATTRIBUTE.search(html).group(0)


@pytest.fixture(scope="module")
def casework(tmp_path_factory):
    """The example with two scenarios run by `kit test --report`: one passes, one fails three ways."""
    project = Project(tmp_path_factory.mktemp("report"))
    copy_example(project.root, scenarios=True)
    failing = project.root / FAILING
    text = failing.read_text()
    text = text.replace("duplicate_pairs: {equals: 1}", "duplicate_pairs: {equals: 2}")
    text = text.replace("{equals: refund_duplicate}", "{equals: \"<script>alert('x')</script>\"}")
    failing.write_text(text)
    table = project.root / "scenarios/casework/expected/C-1002-payload.csv"
    lines = table.read_text().splitlines()
    lines[1] = lines[1].replace("320.31", "999.99", 1)
    table.write_text("\n".join(lines) + "\n")
    result = project.kit("test", PASSING, FAILING, *FAST, "--report", "suite.html")
    return project, result


def test_kit_test_writes_the_suites_report_verdict_and_counts_first(casework):
    project, result = casework
    assert result.returncode == 1, result.stdout + result.stderr
    assert "report: suite.html" in result.stdout
    html = (project.root / "suite.html").read_text()
    verdict = html.index('<div class="verdict fail">fail</div>')
    assert verdict < html.index("<details")  # verdict and counts before any scenario
    counts = html[verdict : html.index("</div>", html.index('class="counts"')) + 6]
    assert re.search(r">1</span> fail<", counts) and re.search(r">1</span> pass<", counts)
    assert re.search(r"<b>\d+</b> of <b>\d+</b> expectations passed", html)


def test_failures_are_expanded_with_expected_actual_and_the_comparators_detail(casework):
    project, _ = casework
    html = (project.root / "suite.html").read_text()
    failing = re.search(r'<details class="scenario fail" open>\s*<summary>.*?</summary>', html, re.S)
    assert failing and "casework/C-1002-double-charge" in failing.group(0)
    passing = re.search(r'<details class="scenario pass">\s*<summary>.*?</summary>', html, re.S)
    assert passing and "casework/C-1001-missing-loyalty-discount" in passing.group(0), "a pass is collapsed"
    # grouped scenario -> step -> expectation
    block = html[failing.start() : passing.start()]
    assert block.index("step fetch_case") < block.index("fetch_case.payload") < block.index("step check_policy")
    # the table comparison: expected and actual as HTML tables, and the rows that differ
    table = block[block.index("fetch_case.payload") : block.index("step check_policy")]
    assert table.count('<table class="grid">') == 2 and "<td>999.99</td>" in table
    assert "1 of 5 rows differ" in table and "in columns: amount" in table and "expected 999.99, got 320.31" in table
    # a value comparison: expected and actual side by side, and why
    assert re.search(r"<h5>expected</h5><pre>2</pre></div><div><h5>actual</h5><pre>1</pre>", block)
    assert "first difference at $: expected 2, got 1" in block


def test_user_text_is_escaped_and_nothing_refers_outside(casework):
    project, _ = casework
    html = (project.root / "suite.html").read_text()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html
    _self_contained(html)


def test_the_report_holds_the_figures_as_inline_svg(casework):
    project, _ = casework
    html = (project.root / "suite.html").read_text()
    svgs = re.findall(r"<svg\b", html)
    assert len(svgs) >= 3  # the verdict matrix, and the failing scenario's graph and timeline
    assert "<metadata>" not in html and "xmlns" not in html
    assert "casework/C-1001-missing-loyalty-discount" in html[html.index("<h2>Last runs</h2>") :]
    assert 'class="notebook"' in html  # the failing steps' executed notebooks


def test_the_same_ledger_gives_the_same_bytes(casework):
    project, _ = casework
    for args in (("--scenarios",), ("--scenarios", "scenarios/casework"), ("last",)):
        first = project.kit("report", *args, "-o", "one.html")
        second = project.kit("report", *args, "-o", "two.html")
        assert first.returncode == second.returncode == 0, first.stderr
        one, two = (project.root / "one.html").read_text(), (project.root / "two.html").read_text()
        at = next((i for i, (x, y) in enumerate(zip(one, two)) if x != y), None)
        assert one == two, (args, one[at - 200 : at + 60] if at else "", two[at - 200 : at + 60] if at else "")


def test_scenarios_report_names_scenarios_never_run(casework):
    project, _ = casework
    result = project.kit("report", "--scenarios", "scenarios/casework", "--last", "3", "-o", "all.html")
    assert result.returncode == 0, result.stderr
    html = (project.root / "all.html").read_text()
    assert "<h2>Never run</h2>" in html and "casework/C-1004-wrong-vat-france" in html
    assert "<h2>Failures (1)</h2>" in html and "<h2>Passed (1)</h2>" in html


def test_run_report_of_a_scenario_run(casework):
    project, _ = casework
    run_id = project.sql("select run_id from runs where scenario_id = 'casework/C-1002-double-charge'")[0]["run_id"]
    result = project.kit("report", run_id[:15], "-o", "run.html")
    assert result.returncode == 0, result.stderr
    html = (project.root / "run.html").read_text()
    assert html.index('<div class="verdict fail">fail</div>') < html.index("<details")
    assert f"<code>{run_id}</code>" in html
    assert "of <b>" in html and "expectations passed" in html
    assert len(re.findall(r"<svg\b", html)) == 3  # graph, timeline, this scenario's verdicts
    for step in ("fetch_case", "check_policy", "retrieve_similar", "summarize", "recommend"):
        assert f"executed notebook of <b>{step}</b>" in html
    assert 'class="highlight' in html  # the notebooks' code cells, coloured by the inline CSS
    assert 'payload</code> <span class="muted">table</span>' in html  # a table output as an HTML table
    _self_contained(html)


def test_bad_references_exit_2_and_write_nothing(casework):
    project, _ = casework
    for args in (("nope",), (), ("a", "b")):
        result = project.kit("report", *args, "-o", "bad.html")
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert not (project.root / "bad.html").exists()


def test_a_failed_step_is_shown_with_its_cell_and_its_html_is_made_harmless(project: Project):
    """A step that displays HTML with outside references and scripts, then raises with markup in its message."""
    project.notebook(
        "boom.ipynb",
        "x: int = 1",
        """
        from IPython.display import HTML, display
        display(HTML('<b id="keep">bold</b><img src="https://tracker.example/p.png">'
                     '<script src="https://cdn.example/x.js"></script><a href="https://example.org/doc">doc</a>'
                     '<style>.x { background: url(https://cdn.example/bg.png) }</style>'))
        print("see https://example.org/help")
        """,
        "raise ValueError(\"<script>alert('boom')</script>\")",
    )
    project.manifest(
        """
        workflow: boom
        version: 1.0.0
        steps:
          boom: {notebook: boom.ipynb}
        """
    )
    run = project.kit("run", "wf", *FAST)
    assert run.returncode == 1, run.stdout + run.stderr
    result = project.kit("report", "last", "-o", "boom.html")
    assert result.returncode == 0, result.stderr
    html = (project.root / "boom.html").read_text()
    assert '<div class="verdict failed">failed</div>' in html
    assert "step boom failed" in html and "ValueError" in html and "failing cell" in html
    assert "&lt;script&gt;alert(&#39;boom&#39;)&lt;/script&gt;" in html
    assert '<b id="keep">bold</b>' in html  # harmless markup from the notebook stays
    _self_contained(html)  # the notebook's <img>, <script> and CSS url() are gone (their code stays, as text)
    assert "see https:&#47;&#47;example.org/help" in html  # printed text stays readable, as a character reference


def test_sanitize_html_keeps_the_page_to_itself():
    dirty = textwrap.dedent(
        """
        <p onclick="steal()">text &amp; <a href="#here">here</a> <a href="javascript:x()">js</a></p>
        <img src="data:image/png;base64,AAAA" onerror="x()"><img src="//cdn.example/a.png">
        <iframe src="https://example.org"><p>inside</p></iframe><object data="x.swf"></object>
        <svg xmlns="http://www.w3.org/2000/svg"><use href="#m1"/><image href="https://x.example/i.png"/></svg>
        <div style="background: url('https://x.example/b.png'); color: red">styled</div>
        <style>@import url(https://x.example/s.css); .a { background: url(data:image/png;base64,AA) }</style>
        <table class="dataframe"><tr><th>a</th><td>1 &lt; 2</td></tr></table>
        """
    )
    clean = sanitize_html(dirty)
    assert "onclick" not in clean and "onerror" not in clean and "javascript" not in clean
    assert "<iframe" not in clean and "inside" not in clean and "<object" not in clean
    assert '<a href="#here">here</a>' in clean and "<a>js</a>" in clean
    assert 'src="data:image/png;base64,AAAA"' in clean and "cdn.example" not in clean and clean.count("<img") == 1
    assert '<use href="#m1"/>' in clean and "x.example" not in clean and "xmlns" not in clean
    assert "color: red" in clean and "@import" not in clean and "url(data:image/png;base64,AA)" in clean
    assert "<td>1 &lt; 2</td>" in clean and "text &amp; " in clean
    assert not EXTERNAL.search(clean)


def test_a_report_never_overwrites_kits_own_files_or_a_file_that_is_no_report(chain):
    """`-o` mistyped: the ledger, the audit head or a notebook are refused (exit 2) and left as they were;
    the report itself is written again and again."""
    assert chain.kit("run", "wf").returncode == 0
    ledger = chain.root / ".kit" / "ledger.duckdb"
    notebook = chain.root / "wf" / "a.ipynb"
    before = {p: p.read_bytes() for p in (ledger, notebook)}
    for target in (ledger, chain.root / ".kit" / "audit.head", notebook):
        refused = chain.kit("report", "last", "-o", str(target))
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert {p: p.read_bytes() for p in before} == before
    for _ in range(2):
        assert chain.kit("report", "last", "-o", "report.html").returncode == 0
    assert chain.kit("audit", "verify").returncode == 0
