"""Composition: a component and a step taken from the workflow store by version range (DESIGN §12).

A producer project publishes a `prompt-pack` and a `refunds` workflow to a store folder; a
consumer project's workflow takes the prompts by range (`kit.component("prompts")`) and runs
`refunds` as a step, its inner steps nested under it. `kit lock` pins every range to a bundle
id, runs record them, and `--locked` refuses a range that would now resolve differently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project, write_notebook

KIT_YAML = """
store: {{url: {store}}}
principals: {{ann: [owner], bob: [owner]}}
roles: {{owner: [refunds:decide]}}
"""


def _publish_pack(producer: Project, version: str, greeting: str) -> None:
    folder = producer.root / "prompt-pack"
    (folder / "prompts").mkdir(parents=True, exist_ok=True)
    (folder / "prompts" / "greeting.md").write_text(greeting)
    write_notebook(
        folder / "list.ipynb",
        "x: int = 0",
        "import kit, pathlib\nkit.output('prompts', sorted(p.name for p in pathlib.Path('prompts').glob('*.md')))",
    )
    (folder / "workflow.yaml").write_text(
        f"workflow: prompt-pack\nversion: {version}\ndescription: the casework prompts\n"
        "steps:\n  list: {notebook: list.ipynb, outputs: {prompts: array}}\n"
    )
    scenario = producer.root / "scenarios" / "prompt-pack" / "lists.yaml"
    scenario.parent.mkdir(parents=True, exist_ok=True)
    scenario.write_text(
        "scenario: prompt-pack/lists\nworkflow: prompt-pack\nexpect:\n  list.prompts: {contains: greeting.md}\n"
    )
    published = producer.kit("publish", "prompt-pack", "--as", "ann")
    assert published.returncode == 0, published.stdout + published.stderr


def _publish_refunds(producer: Project, version: str, limit: int) -> None:
    folder = producer.root / "refunds"
    write_notebook(
        folder / "decide.ipynb",
        "amount: float = 0.0\nreason: str = 'none'",
        f"import kit\nkit.output('decision', {{'action': 'refund' if amount <= {limit} else 'review', 'reason': reason}})",
    )
    (folder / "workflow.yaml").write_text(
        f"workflow: refunds\nversion: {version}\n"
        "params: {amount: {type: number}, reason: {type: string, default: unstated}}\n"
        "steps:\n"
        "  decide:\n"
        "    notebook: decide.ipynb\n"
        "    inputs: {amount: params.amount, reason: params.reason}\n"
        "    outputs: {decision: {type: object, required: [action]}}\n"
        "    requires: [refunds:decide]\n"
    )
    scenario = producer.root / "scenarios" / "refunds" / "small.yaml"
    scenario.parent.mkdir(parents=True, exist_ok=True)
    scenario.write_text(
        "scenario: refunds/small\nworkflow: refunds\nas: ann\nparams: {amount: 5}\n"
        "expect:\n  decide.decision.action: {equals: refund}\n"
    )
    published = producer.kit("publish", "refunds", "--as", "ann")
    assert published.returncode == 0, published.stdout + published.stderr


@pytest.fixture
def store_and_consumer(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "producer").mkdir()
    (tmp_path / "consumer").mkdir()
    producer = Project(tmp_path / "producer")
    (producer.root / "kit.yaml").write_text(KIT_YAML.format(store=store))
    _publish_pack(producer, "5.7.0", "Hello, {name}.")
    _publish_pack(producer, "5.7.1", "Dear {name},")
    _publish_refunds(producer, "1.2.0", 100)

    consumer = Project(tmp_path / "consumer")
    (consumer.root / "kit.yaml").write_text(KIT_YAML.format(store=store))
    consumer.notebook(
        "greet.ipynb",
        "name: str = 'Ada'",
        "import kit\nkit.output('text', (kit.component('prompts') / 'prompts' / 'greeting.md').read_text().format(name=name))",
    )
    consumer.notebook(
        "note.ipynb",
        "decision: dict = {}\ntext: str = ''",
        "import kit\nkit.output('note', f\"{text} {decision['action']}\")",
    )
    consumer.manifest(
        """
        workflow: casenote
        version: 1.0.0
        params: {name: {type: string, default: Ada}, amount: {type: number}}
        components:
          prompts: {store: prompt-pack, version: "~=5.7"}
        steps:
          greet:
            notebook: greet.ipynb
            inputs: {name: params.name}
            outputs: {text: string}
          refund:
            workflow: refunds@~=1.2
            inputs: {amount: params.amount}
            outputs: {decision: object}
          note:
            notebook: note.ipynb
            inputs: {decision: refund.decision, text: greet.text}
            outputs: {note: string}
        """
    )
    return producer, consumer


def test_ranges_are_locked_run_nested_and_recorded(store_and_consumer):
    producer, consumer = store_and_consumer
    locked = consumer.kit("lock", "wf")
    assert locked.returncode == 0, locked.stderr
    lock = json.loads((consumer.root / "wf" / "workflow.lock").read_text())
    assert lock["resolved"]["components"]["prompts"]["version"] == "5.7.1"
    assert lock["resolved"]["steps"]["refund"]["version"] == "1.2.0"

    run = consumer.kit("run", "wf", "-p", "amount=40", "--as", "bob", "--locked", "--engine", "warm")
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = run.stdout.split()[1]
    outputs = {
        (o["step_id"], o["name"]): o["value"] for o in consumer.sql(f"select * from outputs where run_id = '{run_id}'")
    }
    assert outputs[("note", "note")] == "Dear Ada, refund"
    assert outputs[("refund/decide", "decision")] == {"action": "refund", "reason": "unstated"}
    assert outputs[("refund", "decision")] == outputs[("refund/decide", "decision")]
    spans = {s["step_id"]: s for s in consumer.sql(f"select * from spans where run_id = '{run_id}' and kind = 'step'")}
    assert spans["refund/decide"]["parent_id"] == spans["refund"]["span_id"]
    bundle = consumer.sql(
        f"select lock from bundles where bundle_id = (select bundle_id from runs where run_id = '{run_id}')"
    )
    assert bundle[0]["lock"]["resolved"] == lock["resolved"]


def test_a_range_that_now_resolves_differently_is_refused_with_locked(store_and_consumer):
    producer, consumer = store_and_consumer
    assert consumer.kit("lock", "wf").returncode == 0
    _publish_refunds(producer, "1.2.5", 10)
    refused = consumer.kit("run", "wf", "-p", "amount=40", "--as", "bob", "--locked")
    assert refused.returncode == 2 and "step refund: ~=1.2 now resolves to 1.2.5 (locked 1.2.0)" in refused.stderr
    unlocked = consumer.kit("run", "wf", "-p", "amount=40", "--as", "bob", "--engine", "warm")
    assert unlocked.returncode == 0, unlocked.stderr  # without --locked the newest match runs, and is recorded
    run_id = unlocked.stdout.split()[1]
    decided = consumer.sql(f"select value from outputs where run_id = '{run_id}' and step_id = 'refund'")[0]["value"]
    assert decided["action"] == "review"


def test_a_workflow_step_checks_the_inner_contract_and_entitlements(store_and_consumer):
    producer, consumer = store_and_consumer
    manifest = consumer.root / "wf" / "workflow.yaml"
    good = manifest.read_text()
    manifest.write_text(
        good.replace("outputs: {decision: object}", "outputs: {verdict: object}").replace(
            "decision: refund.decision", "decision: refund.verdict"
        )
    )
    bad = consumer.kit("run", "wf", "-p", "amount=1", "--as", "bob")
    assert bad.returncode == 2 and "output 'verdict': no step makes it" in bad.stderr
    manifest.write_text(good)
    denied = consumer.kit("run", "wf", "-p", "amount=1", "--as", "mallory")
    assert denied.returncode == 4 and "refunds:decide" in denied.stderr


def test_a_store_part_without_a_store_is_refused(tmp_path):
    consumer = Project(tmp_path)
    consumer.notebook("a.ipynb", "x: int = 0", "import kit\nkit.output('y', x)")
    consumer.manifest(
        "workflow: w\nversion: 1\ncomponents: {prompts: {store: prompt-pack, version: '~=5.7'}}\n"
        "steps:\n  a: {notebook: a.ipynb, outputs: {y: integer}}\n"
    )
    result = consumer.kit("run", "wf")
    assert result.returncode == 2 and "takes parts from the workflow store: no store given" in result.stderr
    assert not Path(tmp_path / ".kit" / "installed").exists()


def test_a_store_part_without_a_passing_record_is_not_fetched(store_and_consumer):
    producer, consumer = store_and_consumer
    store = producer.root.parent / "store"
    for records in store.glob("bundles/*/records"):
        for record in records.iterdir():
            record.unlink()  # the bundles are intact; nothing says they were verified
    refused = consumer.kit("lock", "wf")
    assert refused.returncode == 1 and "has no verification record: it cannot be used" in refused.stderr
    assert not (consumer.root / ".kit" / "installed").exists() or not any(
        (consumer.root / ".kit" / "installed").iterdir()
    )


def test_a_composed_workflow_is_verified_and_published_with_its_ranges_pinned(store_and_consumer, tmp_path):
    producer, consumer = store_and_consumer
    scenario = consumer.root / "scenarios" / "casenote" / "small.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text(
        "scenario: casenote/small\nworkflow: casenote\nas: bob\nparams: {amount: 40}\n"
        "expect:\n  note.note: {equals: 'Dear Ada, refund'}\n"
    )
    verified = consumer.kit("verify", "wf", "--as", "bob", "--examples", "0")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    published = consumer.kit("publish", "wf", "--as", "bob")
    assert published.returncode == 0, published.stdout + published.stderr
    lock = json.loads(next((tmp_path / "store" / "index" / "casenote").glob("1.0.0.json")).read_text())
    bundle_id = lock["bundle_id"]

    _publish_refunds(producer, "1.2.5", 10)  # a newer match: the published casenote keeps 1.2.0
    (tmp_path / "user").mkdir()
    user = Project(tmp_path / "user")
    (user.root / "kit.yaml").write_text(KIT_YAML.format(store=tmp_path / "store"))
    assert user.kit("install", "casenote@1.0.0").returncode == 0
    run = user.kit("run", "casenote@1.0.0", "-p", "amount=40", "--as", "bob")
    assert run.returncode == 0, run.stdout + run.stderr
    run_id = run.stdout.split()[1]
    assert user.sql(f"select bundle_id from runs where run_id = '{run_id}'")[0]["bundle_id"] == bundle_id
    decided = user.sql(f"select value from outputs where run_id = '{run_id}' and step_id = 'refund'")[0]["value"]
    assert decided["action"] == "refund"  # 1.2.0's limit, as verified; 1.2.5 would review
