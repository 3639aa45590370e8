"""The workflow store on S3: an S3-compatible server (moto) on 127.0.0.1, started here, reached by s3fs.

The `kit` processes find it the way any AWS client would: `AWS_ENDPOINT_URL_S3` and the usual
credential variables. Index entries are created with conditional PUTs (`If-None-Match: *`), so of
racing publishers exactly one wins on S3 too.
"""

from __future__ import annotations

import threading
import uuid

import moto.server as moto_server
import pytest
import s3fs  # noqa: F401  (fsspec opens s3:// with it)
from conftest import Project
from test_store import make_project, nothing_installed, verified, write_workflow

from kit.base.digests import sha256_bytes
from kit.bundles.store import WorkflowStore


@pytest.fixture(scope="module")
def s3_env():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "kit-test",
        "AWS_SECRET_ACCESS_KEY": "kit-test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
    }
    yield env
    server.stop()


@pytest.fixture
def bucket(s3_env, monkeypatch) -> str:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    name = f"kit-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(name)
    return f"s3://{name}/store"


def kit(project: Project, env: dict, *args: str):
    """`kit ARGS` as a process that reaches the S3 server through the standard AWS variables."""
    return project.kit(*args, env=env)


def test_publish_install_run_and_refuse_on_s3(tmp_path, s3_env, bucket):
    owner = make_project(tmp_path / "owner", bucket)
    write_workflow(owner)
    bundle_id = verified(owner)
    verified(owner, env="prod")
    published = kit(owner, s3_env, "publish", "wf", "--as", "alice")
    assert published.returncode == 0, published.stderr
    store = WorkflowStore.open(bucket)
    assert store.resolve("echo", "~=1.0") == ("1.0.0", bundle_id)
    assert "exclusive" in store.exclusive and "If-None-Match" in store.exclusive

    again = kit(owner, s3_env, "publish", "wf")
    assert again.returncode == 0 and "nothing written" in again.stdout
    write_workflow(owner, action="escalate")
    changed = kit(owner, s3_env, "publish", "wf")
    assert changed.returncode == 2 and bundle_id in changed.stderr
    found = kit(owner, s3_env, "store", "search", "--takes", "case_id:string", "--gives", "decision:object")
    assert found.returncode == 0 and "echo" in found.stdout

    user = make_project(tmp_path / "user", bucket)
    installed = kit(user, s3_env, "install", "echo@>=1,<2")
    assert installed.returncode == 0, installed.stderr
    ran = kit(user, s3_env, "run", "echo@>=1,<2", "--as", "alice")
    assert ran.returncode == 0, ran.stderr
    assert user.sql("select bundle_id from runs") == [{"bundle_id": bundle_id}]

    promoted = kit(owner, s3_env, "promote", "echo@1.0.0", "--to", "prod", "--as", "alice")
    assert promoted.returncode == 0, promoted.stderr
    prod = kit(user, s3_env, "run", "echo", "--env", "prod", "--as", "alice")
    assert prod.returncode == 0, prod.stderr
    assert "promoted to prod" in prod.stderr

    key, file_digest = next(iter(store.lock_of(bundle_id)["files"].items()))
    path = store.object_path(file_digest)
    original = store.fs.cat_file(path)
    store.fs.pipe_file(path, original[:-1] + bytes([original[-1] ^ 1]))
    other = make_project(tmp_path / "other", bucket)
    refused = kit(other, s3_env, "install", "echo")
    assert refused.returncode == 1
    assert (
        key in refused.stderr
        and file_digest in refused.stderr
        and sha256_bytes(store.fs.cat_file(path)) in refused.stderr
    )
    nothing_installed(other)


def test_racing_publishers_on_s3(bucket):
    store = WorkflowStore.open(bucket)
    results = []
    start = threading.Barrier(6)

    def publish(n: int) -> None:
        start.wait()
        results.append(store.add_entry({"name": "race", "version": "2.0.0", "bundle_id": f"{n:064x}"}))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_a_missing_bucket_is_one_line(tmp_path, s3_env, bucket):
    user = make_project(tmp_path / "user", "s3://no-such-bucket-kit/store")
    result = kit(user, s3_env, "install", "echo")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: store s3://no-such-bucket-kit/store does not exist (no such bucket); create it first to start an empty store"
    )


def test_wrong_keys_an_unreachable_endpoint_or_no_bucket_say_so_in_one_line(tmp_path, s3_env, bucket):
    """Not "the bucket does not exist" for every failure: the backend's own reason, one line, exit 2."""
    user = make_project(tmp_path / "user", bucket)
    unreachable = kit(
        user, {**s3_env, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:1", "AWS_MAX_ATTEMPTS": "1"}, "install", "echo"
    )
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr, unreachable.stderr
    assert "cannot be reached" in unreachable.stderr and "does not exist" not in unreachable.stderr
    no_bucket = kit(user, s3_env, "install", "echo", "--store", "s3://")
    assert no_bucket.returncode == 2 and "Traceback" not in no_bucket.stderr, no_bucket.stderr
    assert "names no bucket" in no_bucket.stderr
