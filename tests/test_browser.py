"""A real browser: JupyterLab on 127.0.0.1 with a token, Debian's Chromium driven by Playwright.

It opens a notebook that calls `kit.explore()`, runs it, waits for the explorer to render,
clicks a run, sees its steps, and approves a waiting run with the button; the ledger then
holds the approval. It saves screenshots of the explorer and of a report (in
``$KIT_SCREENSHOTS``, else a temporary folder): the README's are made this way.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from conftest import Project, copy_example
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"the browser test needs Debian's Chromium at {CHROMIUM} (.ci/run installs it)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A project whose example run waits for review, a notebook that explores it, JupyterLab serving it."""
    root = tmp_path_factory.mktemp("browser")
    project = Project(root)
    copy_example(root, scenarios=True)
    started = project.kit("run", "notebooks/casework", "-p", "case_id=C-1001", "--as", "alice")
    assert started.returncode == 3, started.stderr
    project.run_id = started.stdout.split()[1]
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Exploring the casework runs"),
            new_code_cell('import kit\napp = kit.explore(as_="bob")\napp'),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(root / "explore.ipynb"))

    port, token = _free_port(), secrets.token_hex(16)
    config = root / ".jupyter"
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(root / ".jupyter-data"),
        "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime"),
        "KIT_PRINCIPAL": "bob",
    }
    env.pop("KIT_HOME", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--allow-root",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"JupyterLab did not start: {server.stderr.read()[-2000:] if server.stderr else ''}")
        time.sleep(0.5)
    project.url, project.token = url, token
    yield project
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"])
        yield chromium
        chromium.close()


def _screenshots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("KIT_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_the_explorer_in_jupyterlab_opens_a_run_and_approves_it(lab, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab.url}/lab/tree/explore.ipynb?token={lab.token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.locator(".jp-StatusBar-Widget", has_text="Idle").first.wait_for(timeout=90_000)  # the kernel is up
    news = page.get_by_role("button", name="No", exact=True)  # JupyterLab asks once about its news feed
    if news.count():
        news.first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    row = page.locator(".kit-run-row", has_text=lab.run_id)
    try:
        row.first.wait_for(timeout=120_000)
    except Exception:
        page.screenshot(path="/tmp/browser-debug.png")
        raise
    row.first.click()
    steps = page.locator(".kit-step-row")
    steps.filter(has_text="fetch_case").first.wait_for(timeout=30_000)
    assert steps.filter(has_text="register_case").count() >= 1
    page.wait_for_timeout(500)
    shots = _screenshots(tmp_path)
    page.locator(".kit-explorer").first.screenshot(path=str(shots / "explorer.png"))

    page.locator(".kit-nav button", has_text="Approvals").first.click()
    approve = page.locator(".kit-approval-row", has_text=lab.run_id).locator(".kit-approve")
    approve.first.wait_for(timeout=30_000)
    page.locator(".kit-approval-comment input, .kit-approval-comment textarea").first.fill("looks right to me")
    approve.first.click()
    page.locator(".kit-message", has_text="approved").first.wait_for(timeout=30_000)
    page.close()

    shown = lab.kit("show", lab.run_id)
    assert "review" in shown.stdout and "approved" in shown.stdout
    decisions = lab.sql(f"select principal, decision, comment from approvals where run_id = '{lab.run_id}'")
    assert decisions == [{"principal": "bob", "decision": "approved", "comment": "looks right to me"}]
    actions = [a["action"] for a in lab.sql("select action from audit order by seq")]
    assert "approval.approved" in actions


def test_a_report_opens_offline_in_the_browser(lab, browser, tmp_path):
    report = tmp_path / "report.html"
    made = lab.kit("report", lab.run_id, "-o", str(report))
    assert made.returncode == 0, made.stderr
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
    page.goto(report.as_uri())
    body = page.inner_text("body")
    assert lab.run_id in body and ("waiting" in body or "succeeded" in body)
    assert page.locator("svg").count() >= 2  # the step graph and the timeline, inline
    assert [u for u in requests if not u.startswith("file:")] == []
    page.screenshot(path=str(_screenshots(tmp_path) / "report.png"), full_page=False)
    page.close()
