"""The casework example composed by range: its prompts come from the workflow store as `prompt-pack`.

`notebooks/casework/prompts/` is a small workflow of its own (`prompt-pack`, with scenarios under
`scenarios/prompt-pack/`). Here, for real and on a copy of the example: it is published to a store
folder, the casework manifest takes its `prompts` component from the store by range instead of
from the folder (which is then gone), `kit lock` pins the range to the published bundle, and the
run reads its prompts through `kit.component("prompts")` from the fetched bundle, asking the model
exactly what the path component asks (the recorded request of scenario C-1001). A newer
prompt-pack makes `kit run --locked` refuse until `kit lock` picks it up.

One module-scoped fixture does the work (two publishes, one run that waits for review); the tests
read what it left behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml
from conftest import REPO, Project, copy_example

CASEWORK = "notebooks/casework"
PATH_COMPONENT = "  prompts: {path: prompts/, version: 1.0.0}\n"
STORE_COMPONENT = '  prompts: {store: prompt-pack, version: "~=1.0"}\n'
SCENARIO = REPO / "scenarios" / "casework" / "C-1001-missing-loyalty-discount.yaml"
RECORDING = REPO / "scenarios" / "casework" / "recordings" / "C-1001-missing-loyalty-discount.jsonl"


@dataclass
class Composed:
    project: Project
    store: Path
    published: dict[str, dict[str, Any]]  # version -> the store's index entry
    locked: CompletedProcess
    lock: dict[str, Any]
    run: CompletedProcess
    refused: CompletedProcess
    relocked: CompletedProcess
    relock: dict[str, Any]


def _ok(result: CompletedProcess, code: int = 0) -> CompletedProcess:
    assert result.returncode == code, result.stdout + result.stderr
    return result


def _entry(store: Path, version: str) -> dict[str, Any]:
    """prompt-pack VERSION's index entry, read through the store's public layout."""
    return json.loads((store / "index" / "prompt-pack" / f"{version}.json").read_text())


def _lock(project: Project) -> dict[str, Any]:
    return json.loads((project.root / CASEWORK / "workflow.lock").read_text())


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> Composed:
    base = tmp_path_factory.mktemp("compose-example")
    store = base / "store"
    store.mkdir()
    (base / "project").mkdir()
    project = Project(base / "project")
    copy_example(project.root, scenarios=True)
    shutil.copytree(REPO / "scenarios" / "prompt-pack", project.root / "scenarios" / "prompt-pack")

    # the prompts, published as they ship (publish verifies them first: scenarios, boundary cases, ...)
    _ok(project.kit("publish", f"{CASEWORK}/prompts", "--store", str(store), "--as", "alice"))
    published = {"1.0.0": _entry(store, "1.0.0")}

    # the one line that takes them from the store instead; the folder leaves the workflow (it becomes
    # the pack's own working copy, outside casework), so the prompts can only come from the store
    manifest = project.root / CASEWORK / "workflow.yaml"
    text = manifest.read_text()
    assert text.count(PATH_COMPONENT) == 1
    manifest.write_text(text.replace(PATH_COMPONENT, STORE_COMPONENT))
    pack = project.root / "prompt-pack"
    shutil.move(project.root / CASEWORK / "prompts", pack)
    with (project.root / "kit.yaml").open("a") as settings:
        settings.write("store: {url: ../store}\n")  # relative to the project

    locked = _ok(project.kit("lock", CASEWORK))
    lock = _lock(project)
    run = _ok(project.kit("run", CASEWORK, "-p", "case_id=C-1001", "--as", "alice", "--locked"), 3)

    # a newer pack: one byte more in a prompt, and the minor version bumped
    pack_manifest = pack / "workflow.yaml"
    pack_manifest.write_text(pack_manifest.read_text().replace("version: 1.0.0", "version: 1.1.0"))
    system = pack / "system.md"
    system.write_text(system.read_text().replace("in the case.", "in the case!"))
    _ok(project.kit("publish", "prompt-pack", "--store", str(store), "--as", "alice"))
    published["1.1.0"] = _entry(store, "1.1.0")

    refused = project.kit("run", CASEWORK, "-p", "case_id=C-1001", "--as", "alice", "--locked")
    relocked = project.kit("lock", CASEWORK)
    return Composed(project, store, published, locked, lock, run, refused, relocked, _lock(project))


def test_the_prompts_folder_is_a_publishable_workflow(composed):
    first = composed.published["1.0.0"]
    assert first["name"] == "prompt-pack" and first["version"] == "1.0.0" and first["publisher"] == "alice"
    assert "prompts" in first["tags"] and first["description"]
    assert composed.published["1.1.0"]["bundle_id"] != first["bundle_id"]
    shipped = yaml.safe_load((REPO / CASEWORK / "workflow.yaml").read_text())
    assert shipped["components"]["prompts"] == {"path": "prompts/", "version": "1.0.0"}  # the example needs no store


def test_the_lock_pins_the_range_to_the_published_bundle(composed):
    bundle_id = composed.published["1.0.0"]["bundle_id"]
    assert composed.lock["resolved"] == {
        "components": {
            "prompts": {"store": "prompt-pack", "range": "~=1.0", "version": "1.0.0", "bundle_id": bundle_id}
        }
    }
    assert f"component prompts: prompt-pack ~=1.0 -> 1.0.0 (bundle {bundle_id[:12]})" in composed.locked.stdout
    assert not any(f.startswith("prompts/") for f in composed.lock["files"])  # not in the casework bundle
    fetched = composed.project.root / ".kit" / "installed" / bundle_id
    for name in ("system.md", "summarize.md"):  # the bytes that shipped, fetched from the store
        assert (fetched / name).read_bytes() == (REPO / CASEWORK / "prompts" / name).read_bytes()


def test_the_run_records_the_resolution(composed):
    run_id = composed.run.stdout.split()[1]
    (run,) = composed.project.sql(f"select bundle_id, status from runs where run_id = '{run_id}'")
    assert run == {"bundle_id": composed.lock["bundle_id"], "status": "waiting"}
    (bundle,) = composed.project.sql(f"select lock from bundles where bundle_id = '{run['bundle_id']}'")
    assert bundle["lock"]["resolved"] == composed.lock["resolved"]


def test_the_summary_is_the_one_the_path_component_gives(composed):
    """The prompts from the store make the very request recorded for C-1001 with the path component
    (same key), so the summary is the recorded one and the shipped scenario's phrases hold."""
    recording = json.loads(RECORDING.read_text().splitlines()[0])
    run_id = composed.run.stdout.split()[1]
    (summary,) = composed.project.sql(
        f"select value from outputs where run_id = '{run_id}' and step_id = 'summarize' and name = 'summary'"
    )
    assert summary["value"] == recording["response"]["choices"][0]["message"]["content"]
    (llm,) = composed.project.sql(f"select attributes from spans where run_id = '{run_id}' and kind = 'llm'")
    assert llm["attributes"]["kit.llm.key"] == recording["key"]
    for phrase in yaml.safe_load(SCENARIO.read_text())["expect"]["summarize.summary"]["contains"]:
        assert phrase in summary["value"]


def test_standalone_the_notebook_finds_the_fetched_prompts_through_the_lock(composed, monkeypatch):
    import kit

    monkeypatch.delenv("KIT_COMPONENTS", raising=False)
    monkeypatch.chdir(composed.project.root / CASEWORK)  # where Jupyter runs the notebook
    bundle_id = composed.relock["resolved"]["components"]["prompts"]["bundle_id"]
    assert kit.component("prompts").resolve() == (composed.project.root / ".kit" / "installed" / bundle_id).resolve()


def test_a_newer_pack_is_refused_with_locked_until_kit_lock_picks_it_up(composed):
    refused = composed.refused
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "component prompts: ~=1.0 now resolves to 1.1.0 (locked 1.0.0)" in refused.stderr
    for version in ("1.0.0", "1.1.0"):
        assert composed.published[version]["bundle_id"][:12] in refused.stderr
    assert "prompt-pack" in refused.stderr and "kit lock" in refused.stderr

    _ok(composed.relocked)
    newer = composed.published["1.1.0"]["bundle_id"]
    assert composed.relock["resolved"]["components"]["prompts"]["version"] == "1.1.0"
    assert composed.relock["resolved"]["components"]["prompts"]["bundle_id"] == newer
    assert f"prompt-pack ~=1.0 -> 1.1.0 (bundle {newer[:12]})" in composed.relocked.stdout
    assert composed.relock["bundle_id"] != composed.lock["bundle_id"]  # the resolution is part of the bundle id
