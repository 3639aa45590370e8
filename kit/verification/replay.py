"""Replay: a scenario on an old bundle and on the current one, beside what was expected.

Replay is not "run it again on similar input": the same scenario runs on the
baseline bundle and on the current workflow, and each expectation is classified
`fixed`, `regressed`, `still-failing` or `still-passing`; outputs whose value
changed are flagged even where both pass (DESIGN section 9).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.base.display import brief
from kit.base.values import jsonable
from kit.bundles.refs import baseline_workflow
from kit.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, KitError
from kit.verification.suite import ScenarioResult, ScenarioRunner

CLASSES = ("regressed", "fixed", "still-failing", "still-passing")


@dataclass
class ExpectationReplay:
    key: str
    comparator: str
    expected: Any
    old: Any
    current: Any
    old_verdict: str
    current_verdict: str
    detail: str  # the current run's explanation when it does not pass

    @property
    def classification(self) -> str:
        old_ok, new_ok = self.old_verdict == "pass", self.current_verdict == "pass"
        if old_ok and new_ok:
            return "still-passing"
        if old_ok:
            return "regressed"
        if new_ok:
            return "fixed"
        return "still-failing"

    @property
    def changed(self) -> bool:
        return jsonable(self.old) != jsonable(self.current)


@dataclass
class ScenarioReplay:
    path: Path
    scenario: str = ""
    baseline_run: str | None = None
    current_run: str | None = None
    baseline_bundle: str | None = None
    current_bundle: str | None = None
    expectations: list[ExpectationReplay] = field(default_factory=list)
    changed_outputs: list[str] = field(default_factory=list)  # STEP.OUTPUT whose values differ between the runs
    invalid: str | None = None

    def count(self, classification: str) -> int:
        return sum(1 for e in self.expectations if e.classification == classification)


def replay_all(runner: ScenarioRunner, paths: list[Path], baseline_ref: str) -> list[ScenarioReplay]:
    """Every scenario on the baseline and on the current workflow. The baseline is resolved once per
    workflow; a baseline that cannot be had (an unknown reference, a snapshot that does not match its
    lock) stops the replay with its own error, it does not make the scenarios invalid."""
    baselines: dict[str, object] = {}
    resolving = threading.Lock()

    def baseline_of(workflow):
        with resolving:  # scenarios run in parallel (`runner.map`); each baseline is resolved once
            if workflow.name not in baselines:
                baselines[workflow.name] = baseline_workflow(
                    runner.project, runner.coordinator.ledger, runner.coordinator.store, workflow, baseline_ref
                )
            return baselines[workflow.name]

    return runner.map(lambda path: replay_scenario(runner, path, baseline_of), paths)


def replay_scenario(runner: ScenarioRunner, path: Path, baseline_of) -> ScenarioReplay:
    """One scenario on the workflow `baseline_of(current workflow)` gives, and on the current one."""
    result = ScenarioReplay(path=path)
    try:
        scenario, current_workflow = runner.prepare(path)
        result.scenario = scenario.id
    except KitError as exc:
        result.invalid = exc.message
        return result
    old_workflow = baseline_of(current_workflow)
    current = runner.run(path)
    if current.invalid:
        result.invalid = current.invalid
        return result
    old = runner.run(path, workflow=old_workflow, baseline_of=current.run_id)
    if old.invalid:
        result.invalid = f"on the baseline: {old.invalid}"
        return result
    result.baseline_run, result.current_run = old.run_id, current.run_id
    result.baseline_bundle, result.current_bundle = old.bundle_id, current.bundle_id
    old_checks = {e.key: o for e, o in old.checks}
    for expectation, outcome in current.checks:
        before = old_checks[expectation.key]
        result.expectations.append(
            ExpectationReplay(
                key=expectation.key,
                comparator=expectation.comparator,
                expected=outcome.expected,
                old=before.actual,
                current=outcome.actual,
                old_verdict=before.verdict,
                current_verdict=outcome.verdict,
                detail=outcome.detail if not outcome.passed else "",
            )
        )
    result.changed_outputs = _changed(runner, old, current)
    return result


def _changed(runner: ScenarioRunner, old: ScenarioResult, current: ScenarioResult) -> list[str]:
    changed = []
    for key in sorted(set(old.values) | set(current.values)):
        a, b = old.values.get(key), current.values.get(key)
        if isinstance(a, str) and isinstance(b, str) and a.startswith("artifact:") and b.startswith("artifact:"):
            if a != b:
                changed.append(key)
        elif jsonable(a) != jsonable(b):
            changed.append(key)
    return changed


def exit_code(replays: list[ScenarioReplay]) -> int:
    if any(r.invalid for r in replays):
        return EXIT_INVALID
    if any(r.count("regressed") for r in replays):
        return EXIT_FAILED
    return EXIT_OK


# ---- formats -------------------------------------------------------------------


def totals(replays: list[ScenarioReplay]) -> dict[str, int]:
    return {c: sum(r.count(c) for r in replays) for c in CLASSES}


def as_json(replays: list[ScenarioReplay], baseline: str) -> str:
    return json.dumps(
        {
            "baseline": baseline,
            "totals": totals(replays),
            "scenarios": [
                {
                    "scenario": r.scenario,
                    "file": str(r.path),
                    "invalid": r.invalid,
                    "baseline_run": r.baseline_run,
                    "current_run": r.current_run,
                    "baseline_bundle": r.baseline_bundle,
                    "current_bundle": r.current_bundle,
                    "changed_outputs": r.changed_outputs,
                    "expectations": [
                        {
                            "expectation": e.key,
                            "comparator": e.comparator,
                            "expected": jsonable(e.expected),
                            "old": jsonable(e.old),
                            "current": jsonable(e.current),
                            "old_verdict": e.old_verdict,
                            "current_verdict": e.current_verdict,
                            "classification": e.classification,
                            "changed": e.changed,
                            "detail": e.detail,
                        }
                        for e in r.expectations
                    ],
                }
                for r in replays
            ],
        },
        indent=2,
        default=str,
    )


def as_table(replays: list[ScenarioReplay], baseline: str) -> str:
    lines = []
    for r in replays:
        if r.invalid:
            lines.append(f"INVALID {r.path}\n  {r.invalid}")
            continue
        lines.append(f"{r.scenario}  (baseline run {r.baseline_run}, current run {r.current_run})")
        width = max((len(e.key) for e in r.expectations), default=10)
        for e in r.expectations:
            flag = "  (changed)" if e.changed and e.classification == "still-passing" else ""
            lines.append(
                f"  {e.classification:<14} {e.key:<{width}}  expected {brief(e.expected, 40)}  "
                f"old {brief(e.old, 40)}  current {brief(e.current, 40)}{flag}"
            )
            if e.detail and e.classification in ("regressed", "still-failing"):
                lines += ["      " + line for line in e.detail.splitlines()[:6]]
        if r.changed_outputs:
            lines.append(f"  outputs that changed: {', '.join(r.changed_outputs)}")
    t = totals(replays)
    lines.append("")
    lines.append(f"against {baseline}: " + ", ".join(f"{n} {c}" for c, n in t.items()))
    return "\n".join(lines)


def as_markdown(replays: list[ScenarioReplay], baseline: str) -> str:
    t = totals(replays)
    icon = {"regressed": "🔴", "fixed": "🟢", "still-failing": "🟠", "still-passing": "⚪"}
    verdict = "regressions found" if t["regressed"] else "no regressions"
    out = [
        f"### kit replay against `{baseline}`: {verdict}",
        "",
        "| regressed | fixed | still failing | still passing |",
        "|---:|---:|---:|---:|",
        f"| {t['regressed']} | {t['fixed']} | {t['still-failing']} | {t['still-passing']} |",
        "",
    ]
    for r in replays:
        if r.invalid:
            out += [f"**{r.path}**: invalid: {r.invalid}", ""]
            continue
        interesting = [e for e in r.expectations if e.classification != "still-passing" or e.changed]
        summary = ", ".join(f"{r.count(c)} {c}" for c in CLASSES if r.count(c))
        out.append(
            f"<details{' open' if r.count('regressed') or r.count('fixed') else ''}>"
            f"<summary><b>{r.scenario}</b>: {summary}</summary>"
        )
        out.append("")
        if interesting:
            out += ["| | expectation | expected | baseline | current |", "|---|---|---|---|---|"]
            for e in interesting:
                label = e.classification + (" (changed)" if e.changed and e.classification == "still-passing" else "")
                cells = [_md(brief(v, 50)) for v in (e.expected, e.old, e.current)]
                out.append(f"| {icon[e.classification]} {label} | `{e.key}` | {cells[0]} | {cells[1]} | {cells[2]} |")
        else:
            out.append("Every expectation still passes with the same values.")
        if r.changed_outputs:
            out += ["", "Outputs that changed: " + ", ".join(f"`{k}`" for k in r.changed_outputs)]
        out += ["", f"Runs: baseline `{r.baseline_run}`, current `{r.current_run}`", "</details>", ""]
    return "\n".join(out)


def _md(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"
