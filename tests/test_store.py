"""The workflow store (DESIGN section 12): publish, yank, search, show, install, run what is installed,
promote, roll back, run what is promoted; and every way a store can be wrong or damaged.

Each acceptance test runs against a local folder and against `memory://` (so in this process, through
click's runner: a `memory://` store lives in one process). Verification is real (`kit verify`), with no
generated boundary cases where the test is not about verification, to stay quick.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import Project, key_pair, write_notebook

from kit.base.digests import sha256_bytes, sha256_file
from kit.bundles.store import NoMatch, StoreDamaged, StoreUnavailable, WorkflowStore

KIT_YAML = """
principals: {{alice: [owner], bob: [reviewer], eve: [analyst]}}
roles: {{owner: ["promote:prod", "promote:dev"], reviewer: [], analyst: []}}
store: {{url: "{store}"}}
"""

MANIFEST = """
workflow: echo
version: {version}
description: Turn a case into a decision
tags: [cases, demo]
params:
  case_id: {{type: string, default: C-1}}
steps:
  decide: {{notebook: decide.ipynb, inputs: {{case_id: params.case_id}}, outputs: {{decision: object}}}}
environments:
  dev: {{}}
  prod: {prod}
"""


def write_workflow(project: Project, version: str = "1.0.0", action: str = "ok", prod: str = "{}") -> None:
    write_notebook(
        project.root / "wf" / "decide.ipynb",
        "case_id: str = 'C-1'",
        f"import kit\nkit.output('decision', {{'case': case_id, 'action': {action!r}}})",
    )
    (project.root / "wf" / "workflow.yaml").write_text(MANIFEST.format(version=version, prod=prod))
    scenario = project.root / "scenarios" / "echo" / "one.yaml"
    scenario.parent.mkdir(parents=True, exist_ok=True)
    scenario.write_text(
        f"scenario: echo/one\nworkflow: echo\nparams: {{case_id: C-7}}\n"
        f"expect:\n  decide.decision: {{equals: {{case: C-7, action: {action}}}}}\n"
    )


def make_project(root: Path, store: str) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    project = Project(root)
    (root / "kit.yaml").write_text(KIT_YAML.format(store=store))
    return project


def verified(project: Project, env: str | None = None) -> str:
    """Verify the workflow as it is (no generated cases: quick); its bundle id."""
    from kit.spec.project import Project as KitProject
    from kit.verification.verify import verify

    result = verify(KitProject(project.root), "wf", env=env, principal="alice", examples=0)
    assert result.passed, result.problems
    return result.bundle_id


def store_files(store: WorkflowStore) -> dict[str, bytes]:
    """Every file of a store, by its path in the store."""
    return {store.where(p): store.fs.cat_file(p) for p in store.fs.find(store.root)}


def ok(result, code: int = 0):
    assert result.exit_code == code, result.output
    return result


def one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(params=["folder", "memory"])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "folder":
        (tmp_path / "store").mkdir()
        yield str(tmp_path / "store")
        return
    import fsspec

    name = f"/kit-store-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.mkdir(name)
    yield f"memory://{name}"
    fs.rm(name, recursive=True)


@pytest.fixture
def owner(tmp_path: Path, store_url: str) -> Project:
    """The workflow's owner: a project with the workflow `echo` 1.0.0, one scenario, and the store."""
    project = make_project(tmp_path / "owner", store_url)
    write_workflow(project)
    return project


@pytest.fixture
def user(tmp_path: Path, store_url: str) -> Project:
    """A second project that installs from the same store."""
    return make_project(tmp_path / "user", store_url)


# ---- publish, search, show, install, run ---------------------------------------


def test_publish_search_show_install_run(owner: Project, user: Project, store_url: str):
    result = ok(owner.cli("publish", "wf", "--as", "alice"))  # no verification yet: publish runs one
    assert "published echo@1.0.0" in result.output and "verified now" in result.output
    store = WorkflowStore.open(store_url)
    version, bundle_id = store.resolve("echo", "")
    assert version == "1.0.0" and store.lock_of(bundle_id)["workflow"] == "echo"
    entry = store.entry("echo", "1.0.0")
    assert entry["publisher"] == "alice" and entry["tags"] == ["cases", "demo"]
    assert entry["contract"]["params"]["case_id"]["type"] == "string"
    assert entry["contract"]["outputs"]["decide.decision"]["type"] == "object"
    assert [d for d, _ in store.records(bundle_id)] == entry["records"]

    before = store_files(store)
    result = ok(owner.cli("publish", "wf", "--as", "alice"))  # the same bundle again: nothing written
    assert "already published" in result.output and store_files(store) == before

    found = json.loads(
        ok(
            owner.cli(
                "store", "search", "case", "--takes", "case_id:string", "--gives", "decision:object", "--format", "json"
            )
        ).output
    )
    assert [(e["name"], e["version"]) for e in found] == [("echo", "1.0.0")]
    assert "no workflow matches" in ok(owner.cli("store", "search", "--gives", "decision:string")).output
    assert "no workflow matches" in ok(owner.cli("store", "search", "refunds")).output
    shown = ok(owner.cli("store", "show", "echo")).output
    assert "1.0.0" in shown and "verified" in shown and "1 scenarios pass" in shown

    result = ok(user.cli("install", "echo@~=1.0", "--as", "bob"))
    assert f"installed echo 1.0.0 (bundle {bundle_id})" in result.output
    lock = json.loads((user.root / "kit.lock").read_text())
    assert lock["installed"]["echo"]["bundle_id"] == bundle_id and lock["installed"]["echo"]["spec"] == "~=1.0"
    installed = user.root / ".kit" / "installed" / bundle_id
    files = store.lock_of(bundle_id)["files"]
    for key, file_digest in files.items():  # the installed files are the store's, byte for byte
        assert sha256_file(installed / key) == file_digest == sha256_bytes(store.read_object(file_digest))
    again = ok(user.cli("install", "echo@~=1.0"))
    assert "nothing changed" in again.output and json.loads((user.root / "kit.lock").read_text()) == lock

    ok(user.cli("run", "echo@~=1.0", "--as", "alice"))
    runs = user.sql("select bundle_id, status, version from runs")
    assert runs == [{"bundle_id": bundle_id, "status": "succeeded", "version": "1.0.0"}]
    actions = user.sql("select action, name, version, bundle_id from store_actions")
    assert actions == [{"action": "install", "name": "echo", "version": "1.0.0", "bundle_id": bundle_id}]
    assert one_line_error(user.cli("run", "echo@>=2"), 2).endswith("kit install echo@>=2")


def test_a_published_version_never_changes(owner: Project, store_url: str):
    first = verified(owner)
    ok(owner.cli("publish", "wf", "--as", "alice"))
    store = WorkflowStore.open(store_url)
    before = store_files(store)
    write_workflow(owner, action="escalate")  # a changed notebook, the same version
    error = one_line_error(owner.cli("publish", "wf", "--as", "alice"), 2)
    assert "echo@1.0.0" in error and first in error
    from kit.bundles.lock import compute_lock
    from kit.spec.project import Project as KitProject

    changed = compute_lock(KitProject(owner.root).load_workflow(owner.root / "wf" / "workflow.yaml"))["bundle_id"]
    assert changed in error and store_files(store) == before


def test_yanked_versions_leave_ranges(owner: Project, user: Project, store_url: str):
    verified(owner)
    ok(owner.cli("publish", "wf", "--as", "alice"))
    write_workflow(owner, version="1.1.0")
    verified(owner)
    ok(owner.cli("publish", "wf", "--as", "alice"))
    result = ok(owner.cli("yank", "echo@1.1.0", "--reason", "wrong action for VAT cases", "--as", "alice"))
    assert "yanked echo@1.1.0" in result.output
    assert "already yanked" in ok(owner.cli("yank", "echo@1.1.0", "--reason", "again")).output
    assert "yanked by alice" in ok(owner.cli("store", "show", "echo@==1.1.0")).output

    assert "installed echo 1.0.0" in ok(user.cli("install", "echo@~=1.0")).output  # the range skips 1.1.0
    error = one_line_error(user.cli("install", "echo@>=1.1"), 2)
    assert "1.1.0 matched but is yanked" in error and "published: 1.0.0, 1.1.0 (yanked)" in error
    pinned = ok(user.cli("install", "echo@==1.1.0"))  # an exact pin still installs it
    assert "installed echo 1.1.0" in pinned.output and "is yanked: wrong action for VAT cases" in pinned.stderr


# ---- a damaged store is refused, and nothing is installed ---------------------------------


def _published(owner: Project, store_url: str) -> tuple[WorkflowStore, str]:
    verified(owner)
    ok(owner.cli("publish", "wf", "--as", "alice"))
    store = WorkflowStore.open(store_url)
    return store, store.resolve("echo", "")[1]


def nothing_installed(user: Project) -> None:
    assert not (user.root / "kit.lock").exists()
    installed = user.root / ".kit" / "installed"
    assert not installed.exists() or not list(installed.iterdir())


def test_a_changed_byte_in_any_object_is_refused(owner: Project, user: Project, store_url: str):
    store, bundle_id = _published(owner, store_url)
    for key, file_digest in store.lock_of(bundle_id)["files"].items():
        path = store.object_path(file_digest)
        original = store.fs.cat_file(path)
        store.fs.pipe_file(path, bytes([original[0] ^ 1]) + original[1:])
        error = one_line_error(user.cli("install", "echo@==1.0.0"), 1)
        assert key in error and file_digest in error and sha256_bytes(store.fs.cat_file(path)) in error
        nothing_installed(user)
        store.fs.rm(path)  # a deleted object
        error = one_line_error(user.cli("install", "echo@==1.0.0"), 1)
        assert key in error and "missing" in error
        nothing_installed(user)
        store.fs.pipe_file(path, original)
    ok(user.cli("install", "echo@==1.0.0"))


def test_a_changed_index_lock_or_record_is_refused(owner: Project, user: Project, store_url: str):
    store, bundle_id = _published(owner, store_url)
    index = store.root + "/index/echo/1.0.0.json"
    entry_bytes = store.fs.cat_file(index)
    other = "0" * 64
    store.fs.pipe_file(index, entry_bytes.replace(bundle_id.encode(), other.encode()))
    error = one_line_error(user.cli("install", "echo"), 1)
    assert other in error
    store.fs.pipe_file(index, b"{not json")
    assert "index/echo/1.0.0.json: malformed index entry" in one_line_error(user.cli("install", "echo"), 1)
    store.fs.pipe_file(index, entry_bytes)
    nothing_installed(user)

    lock_path = store.root + f"/bundles/{bundle_id}/lock.json"
    lock_bytes = store.fs.cat_file(lock_path)
    store.fs.pipe_file(lock_path, lock_bytes.replace(b'"version":"1.0.0"', b'"version":"1.0.1"'))
    error = one_line_error(user.cli("install", "echo"), 1)
    assert "lock.json does not match its bundle id" in error and bundle_id in error
    store.fs.pipe_file(lock_path, lock_bytes)

    ((record_digest, _),) = store.records(bundle_id)
    record_path = store.root + f"/bundles/{bundle_id}/records/{record_digest}.json"
    record = json.loads(store.fs.cat_file(record_path))
    import base64

    statement = json.loads(base64.b64decode(record["payload"]))
    statement["predicate"]["verdict"] = "verified"
    statement["subject"][0]["digest"]["sha256"] = other  # a record of another bundle
    record["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    store.fs.pipe_file(record_path, json.dumps(record).encode())
    assert "altered" in one_line_error(user.cli("install", "echo"), 1)
    store.fs.pipe_file(record_path, b"[]")
    assert "malformed verification record" in one_line_error(user.cli("install", "echo"), 1)
    nothing_installed(user)


def test_bad_stores_and_specs(owner: Project, user: Project, store_url: str, tmp_path: Path):
    assert "does not exist" in one_line_error(user.cli("install", "echo", "--store", str(tmp_path / "nope")), 2)
    assert "fsspec cannot open the scheme nosuch://" in one_line_error(
        user.cli("install", "echo", "--store", "nosuch://x"), 2
    )
    assert "has no workflow 'echo' (it is empty)" in one_line_error(user.cli("install", "echo"), 2)
    verified(owner)
    ok(owner.cli("publish", "wf"))
    error = one_line_error(user.cli("install", "echo@>=2,<3"), 2)
    assert "no version matches" in error and "published: 1.0.0" in error
    assert "not a version specifier" in one_line_error(user.cli("install", "echo@~~1"), 2)
    assert "cannot be stored" in one_line_error(user.cli("install", "../echo"), 2)
    (user.root / "kit.yaml").write_text("{}\n")
    assert "no store given" in one_line_error(user.cli("install", "echo"), 2)
    nothing_installed(user)


# ---- races and interruptions --------------------------------------------------------


@pytest.mark.parametrize("spellings", [["1.0.0"], ["1", "1.0", "1.0.0", "v1.0"]])
def test_an_index_entry_is_created_once(store_url: str, spellings: list[str]):
    """Eight publishers race for one version, spelled alike or (PEP 440 equal) differently: one wins."""
    store = WorkflowStore.open(store_url)
    results = []
    start = threading.Barrier(8)

    def publish(n: int) -> None:
        entry = {"name": "race", "version": spellings[n % len(spellings)], "bundle_id": f"{n:064x}"}
        start.wait()
        results.append((n, store.add_entry(entry)))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, created in results if created]
    assert len(winners) == 1
    assert [v.version for v in store.versions("race")] == [spellings[winners[0] % len(spellings)]]
    assert store.published("race", "1.0.0")[1]["bundle_id"] == f"{winners[0]:064x}"


def test_a_version_claimed_by_a_publisher_killed_before_its_entry_is_completed(store_url: str):
    """The claim holds the whole entry: the next publisher of an equal version writes it and loses to it."""
    store = WorkflowStore.open(store_url)
    first = {"name": "echo", "version": "2.0", "bundle_id": "a" * 64}
    assert store._create(store._path("index", "echo", ".claims", "2.json"), json.dumps(first).encode())
    assert store.versions("echo") == []  # killed here: nothing is published yet
    assert store.add_entry({"name": "echo", "version": "2.0.0", "bundle_id": "b" * 64}) is False
    assert [v.version for v in store.versions("echo")] == ["2.0"]
    assert store.entry("echo", "2.0")["bundle_id"] == "a" * 64


def test_a_folder_store_is_readable_by_everyone_the_umask_lets_read_it(owner: Project, tmp_path: Path):
    """A store folder is shared: its files take the umask's mode, not a temporary file's 0600."""
    store = tmp_path / "shared-store"
    store.mkdir()
    verified(owner)
    old = os.umask(0o022)
    try:
        ok(owner.cli("publish", "wf", "--store", str(store)))
    finally:
        os.umask(old)
    modes = {oct(p.stat().st_mode & 0o777) for p in store.rglob("*") if p.is_file()}
    assert modes == {"0o644"}, modes


def test_an_interrupted_publish_shows_nothing(owner: Project, store_url: str, monkeypatch):
    verified(owner)

    def killed(self, entry):
        raise RuntimeError("killed")  # the publisher dies after objects, lock and record, before the index entry

    monkeypatch.setattr(WorkflowStore, "add_entry", killed)
    with pytest.raises(RuntimeError, match="killed"):
        owner.cli("publish", "wf")
    store = WorkflowStore.open(store_url)
    assert store.names() == [] and len(store.fs.find(store.root + "/objects")) == 2
    with pytest.raises(NoMatch):
        store.resolve("echo", "")
    monkeypatch.undo()
    ok(owner.cli("publish", "wf"))  # publishing again completes it
    assert store.resolve("echo", "")[0] == "1.0.0"


def test_two_publishers_race_for_one_version(tmp_path: Path):
    (tmp_path / "store").mkdir()
    first, second = (make_project(tmp_path / name, str(tmp_path / "store")) for name in ("first", "second"))
    write_workflow(first)
    write_workflow(second, action="escalate")  # another bundle under the same version
    ids = {verified(first), verified(second)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kit.cli", "publish", "wf"],
            cwd=p.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (first, second)
    ]
    outcomes = sorted((proc.wait(timeout=120), proc.stderr.read()) for proc in procs)
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    assert all(bundle_id in outcomes[1][1] for bundle_id in ids)


# ---- promote, roll back, run what is promoted ------------------------------------------


def test_promote_roll_back_and_run_what_is_promoted(owner: Project, user: Project, store_url: str):
    ids = {}
    for version, action in (("1.0.0", "ok"), ("1.1.0", "refund")):
        write_workflow(owner, version=version, action=action)
        verified(owner)
        ids[version] = verified(owner, env="prod")
        ok(owner.cli("publish", "wf", "--as", "alice"))

    denied = one_line_error(owner.cli("promote", "echo@1.0.0", "--to", "prod", "--as", "eve"), 4)
    assert "promote:prod" in denied
    assert owner.sql("select action from audit where action = 'store.promote.denied'")

    ok(owner.cli("promote", "echo@1.0.0", "--to", "prod", "--as", "alice"))
    time.sleep(0.05)
    ok(owner.cli("promote", "echo@1.1.0", "--to", "prod", "--as", "alice"))
    time.sleep(0.05)
    between = WorkflowStore.open(store_url).channel("echo", "prod")[-1]["time"]
    time.sleep(0.05)
    result = ok(owner.cli("promote", "echo@1.0.0", "--to", "prod", "--as", "alice"))  # rollback
    assert "(was 1.1.0)" in result.output

    history = json.loads(ok(owner.cli("promotions", "echo", "--env", "prod", "--format", "json")).output)
    assert [e["version"] for e in history["entries"]["prod"]] == ["1.0.0", "1.1.0", "1.0.0"]
    assert history["live"]["prod"]["bundle_id"] == ids["1.0.0"]
    at = ok(owner.cli("promotions", "echo", "--env", "prod", "--at", between))
    assert f"live in prod at {between}: 1.1.0" in at.output
    assert "live in prod" in ok(owner.cli("store", "show", "echo@==1.0.0")).output
    assert owner.sql("select count(*) as n from audit where action = 'store.promote'") == [{"n": 3}]

    result = ok(user.cli("run", "echo", "--env", "prod", "--as", "alice"))  # in another project
    assert "promoted to prod" in result.stderr
    assert user.sql("select bundle_id, env from runs") == [{"bundle_id": ids["1.0.0"], "env": "prod"}]

    store = WorkflowStore.open(store_url)
    channel = store.channel_path("echo", "prod")
    text = store.fs.cat_file(channel).decode()
    store.fs.pipe_file(channel, text.replace('"version": "1.1.0"', '"version": "1.0.0"').encode())
    error = one_line_error(owner.cli("promotions", "echo"), 1)
    assert "channels/echo/prod.jsonl: line 2" in error and "altered" in error
    assert "channels/echo/prod.jsonl: line 2" in one_line_error(user.cli("run", "echo", "--env", "prod"), 1)


def test_a_promotion_waits_for_its_approval(tmp_path: Path):
    (tmp_path / "store").mkdir()
    owner = make_project(tmp_path / "owner", str(tmp_path / "store"))
    write_workflow(owner, prod="{approval: {approvers: [reviewer]}}")
    verified(owner)
    verified(owner, env="prod")
    assert owner.kit("publish", "wf", "--as", "alice").returncode == 0

    waiting = owner.kit("promote", "echo@1.0.0", "--to", "prod", "--as", "alice")
    assert waiting.returncode == 3, waiting.stderr
    run_id = owner.sql("select run_id from runs where workflow = 'promote-echo-prod'")[0]["run_id"]
    assert f"kit approve {run_id} promotion" in waiting.stdout
    assert WorkflowStore.open(str(tmp_path / "store")).channel("echo", "prod") == []
    assert owner.kit("approve", run_id, "promotion", "--as", "alice").returncode == 4  # four eyes
    assert owner.kit("approve", run_id, "promotion", "--as", "bob").returncode == 0
    resumed = owner.kit("resume", run_id)
    assert resumed.returncode == 0 and "approved by bob" in resumed.stdout
    (entry,) = WorkflowStore.open(str(tmp_path / "store")).channel("echo", "prod")
    assert entry["principal"] == "alice" and entry["approved_by"] == "bob" and entry["version"] == "1.0.0"
    assert "nothing to resume" in owner.kit("resume", run_id).stdout  # appended once
    assert len(WorkflowStore.open(str(tmp_path / "store")).channel("echo", "prod")) == 1

    gc = owner.kit("gc", "--older-than", "1s")  # the approval run and the verification runs are evidence
    assert gc.returncode == 0, gc.stderr
    assert run_id in gc.stdout and owner.sql(f"select count(*) as n from runs where run_id = '{run_id}'") == [{"n": 1}]


# ---- the resolver and channels, directly ----------------------------------------------


def test_resolve_follows_pep_440(store_url: str):
    store = WorkflowStore.open(store_url)
    for n, version in enumerate(["1.2.0", "1.3.0", "1.3.5", "1.4.0", "2.0.0", "2.1.0rc1"]):
        store.add_entry({"name": "refunds", "version": version, "bundle_id": f"{n:064x}"})
    store.yank("refunds", "1.4.0", {"reason": "broken"})
    assert store.resolve("refunds", "~=1.3")[0] == "1.3.5"  # 1.4.0 is yanked
    assert store.resolve("refunds", "~=1.3.0")[0] == "1.3.5"
    assert store.resolve("refunds", ">=1.2,<2")[0] == "1.3.5"
    assert store.resolve("refunds", "==1.3.0")[0] == "1.3.0"
    assert store.resolve("refunds", "==1.4.0")[0] == "1.4.0"  # an exact pin reaches a yanked version
    assert store.resolve("refunds", "")[0] == "2.0.0"  # no pre-release unless asked for
    assert store.resolve("refunds", ">=2.1.0rc1")[0] == "2.1.0rc1"
    with pytest.raises(NoMatch, match=r"published: 1.2.0, 1.3.0, 1.3.5, 1.4.0 \(yanked\), 2.0.0, 2.1.0rc1"):
        store.resolve("refunds", ">=3")
    with pytest.raises(NoMatch, match="has no workflow 'nope' \\(it has refunds\\)"):
        store.resolve("nope", "")
    with pytest.raises(StoreUnavailable):
        WorkflowStore.open(store_url + "-missing")


def test_concurrent_promotions_chain(store_url: str):
    store = WorkflowStore.open(store_url)
    threads = [
        threading.Thread(
            target=store.append_channel, args=("refunds", "prod", {"version": f"1.{n}.0", "bundle_id": f"{n:064x}"})
        )
        for n in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = store.channel("refunds", "prod")  # the chain checks out
    assert [e["seq"] for e in history] == list(range(1, 7))
    assert sorted(e["version"] for e in history) == [f"1.{n}.0" for n in range(6)]
    store.fs.rm(store.channel_path("refunds", "prod"))  # a promoter killed before rewriting the .jsonl
    assert store.channel("refunds", "prod") == history  # loses nothing: the claimed entries hold it
    with pytest.raises(StoreDamaged):
        store.fs.pipe_file(store._claim_path("refunds", "prod", 3), b'{"seq": 3}')
        store.channel("refunds", "prod")


# ---- signatures: what kit.yaml trusts ---------------------------------------------------


def test_install_checks_signatures_against_trusted_keys(tmp_path: Path):
    from kit.spec.project import Project as KitProject
    from kit.verification.verify import verify

    (tmp_path / "store").mkdir()
    owner = make_project(tmp_path / "owner", str(tmp_path / "store"))
    write_workflow(owner)
    team_key, team_pub = key_pair(tmp_path, "team")
    _, stranger_pub = key_pair(tmp_path, "stranger")
    verify(KitProject(owner.root), "wf", principal="alice", examples=0, sign_key=team_key)
    result = ok(owner.cli("publish", "wf", "--sign", str(team_key)))
    assert "verified before" in result.output  # the signed verification the ledger has

    user = make_project(tmp_path / "user", str(tmp_path / "store"))
    (user.root / "kit.yaml").write_text(
        KIT_YAML.format(store=tmp_path / "store").replace("store: {", f'store: {{trust: ["{stranger_pub}"], ')
    )
    error = one_line_error(user.cli("install", "echo"), 1)
    assert "signed by a key kit.yaml trusts" in error and "none of them trusted" in error
    nothing_installed(user)
    (user.root / "kit.yaml").write_text(
        KIT_YAML.format(store=tmp_path / "store").replace("store: {", f'store: {{trust: ["{team_pub}"], ')
    )
    ok(user.cli("install", "echo"))


def test_a_name_with_a_trailing_newline_cannot_be_stored():
    """`$` matches before a final newline: a workflow named "echo\\n" was stored as a folder no one could ask for."""
    from kit.bundles.store import check_name
    from kit.errors import InvalidInput

    assert check_name("echo-1.x") == "echo-1.x"
    with pytest.raises(InvalidInput):
        check_name("echo\n")


def test_a_channel_entry_of_the_wrong_shape_with_its_hashes_recomputed_is_damage_not_a_crash(
    owner: Project, store_url: str
):
    """Someone who can write the store may rewrite a channel entry and its hash: a bundle_id that is no
    sha256 is StoreDamaged (exit 1, one line) for `kit promotions` and a run from the channel alike."""
    from kit.bundles.store import entry_hash

    verified(owner)
    verified(owner, env="prod")
    ok(owner.cli("publish", "wf", "--as", "alice"))
    ok(owner.cli("promote", "echo@1.0.0", "--to", "prod", "--as", "alice"))
    store = WorkflowStore.open(store_url)
    entry = dict(store.channel("echo", "prod")[0], bundle_id=5)
    entry["hash"] = entry_hash(entry)
    store._write(store.channel_path("echo", "prod"), (json.dumps(entry, sort_keys=True) + "\n").encode())
    with pytest.raises(StoreDamaged, match="bundle_id 5"):
        store.channel("echo", "prod")
    assert "bundle_id 5" in one_line_error(owner.cli("promotions", "echo"), 1)


def test_a_verification_record_whose_subject_is_of_the_wrong_shape_is_damage_not_a_crash(tmp_path: Path):
    """A record renamed to its own statement's digest, but whose subject is a list of strings: StoreDamaged."""
    from kit.bundles import attestation
    from kit.bundles.admission import check_record

    store = WorkflowStore.open(str(tmp_path))
    env = attestation.envelope(attestation.statement(["x"], {"verdict": "pass"}))  # type: ignore[list-item]
    lock = {"bundle_id": "a" * 64, "files": {}}
    with pytest.raises(StoreDamaged, match="malformed verification record"):
        check_record(store, lock, attestation.record_digest(env), env)
