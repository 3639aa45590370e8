"""Boundary cases of `kit verify`: a workflow must fail cleanly, or succeed within its contracts,
on any value its declared parameter types admit (DESIGN section 12).

For each declared parameter, Hypothesis tries the values that break code most often,
as explicit examples (empty, whitespace, unicode and very long strings; zero, negative
and huge numbers; both booleans; null where the type allows; empty objects and arrays),
each varying that parameter alone from a working base (the first scenario's
parameters, else the defaults); then `examples` generated cases, where each parameter
is either its base value or any value of its type. Every case is one real run through
the coordinator. A case is fine when the run succeeds (the coordinator checks every
output against its contract), when it fails in a step with a recorded error, or when
kit refuses the input before anything runs. It fails verification when a step violates
its output contract (`OutputError`), runs past its timeout (`Timeout`; steps without
one get `DEFAULT_STEP_TIMEOUT`), fails with no error recorded, or kit itself crashes (an
exception that is not a `KitError`). A generated failing input is shrunk by Hypothesis, and
the result names it; a fixed boundary value is named as it is (it varies one parameter
from the base already, and Hypothesis does not shrink explicit examples).

The runs are recorded as ordinary runs, since they are the evidence, with the
scenario id `verify:boundary`: `kit runs` shows what they are, the scenario matrix
leaves them out (they have no expectations), and, as for scenario runs, approval gates
do not wait (the gate and the steps after it are skipped, so no side effect past a
gate happens). They act as the principal of the workflow's first scenario (who is known
to be allowed to run it), else as the verifier. LLM calls run live when the model's
provider is `fake` (offline and deterministic), and are replayed otherwise, with no
recordings: an LLM step then fails, closed, with a replay miss, and the network is
never used. Steps reuse the cache as in any run (the same notebook on the same inputs
gives the same outputs, already checked), so verifying a bundle again is quicker.
Hypothesis runs derandomized and without its example database, so the
same bundle gets the same cases; its caches go under `.kit/hypothesis`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.base.display import brief, shorten
from kit.base.progress import Progress
from kit.errors import KitError, PermissionDenied
from kit.execution.coordinator import Coordinator, RunOutcome, RunRequest
from kit.execution.environment import LLMSettings
from kit.execution.executors import Executor, LocalExecutor
from kit.execution.task import StepTask
from kit.spec.manifest import ParamSpec, Workflow
from kit.spec.policy import Redactor

BOUNDARY_SCENARIO = "verify:boundary"
DEFAULT_EXAMPLES = 12
DEFAULT_STEP_TIMEOUT = 60.0  # seconds, for a step that declares no timeout: a hang is caught, not waited out
SHRINK_BUDGET = 40  # runs spent shrinking a failing input; past it, the smallest failure found is named
VIOLATIONS = ("OutputError", "Timeout")
LONG_STRING = "x" * 10_000
UNICODE_STRING = "Ωmega ünïcödé 中文 🙂 \u200b\u202eRTL\u0301"


class DefaultTimeout:
    """An executor that gives every step without a declared timeout one, so no step can hang a verification."""

    def __init__(self, inner: Executor, seconds: float):
        self.inner, self.seconds = inner, seconds

    def submit(self, task: StepTask):
        if task.timeout is None:
            task.timeout = self.seconds
        return self.inner.submit(task)

    def shutdown(self) -> None:
        self.inner.shutdown()


def executor_with_timeout(seconds: float = DEFAULT_STEP_TIMEOUT) -> Callable[[int], Executor]:
    """An executor factory for `Coordinator`: local threads, and a default step timeout."""
    return lambda workers: DefaultTimeout(LocalExecutor(workers), seconds)


@dataclass
class BoundaryCase:
    params: dict[str, Any]
    varied: list[str]  # the parameters that differ from the base
    explicit: bool  # a fixed boundary value, not a generated one
    verdict: str = ""  # succeeded | failed (in a step, recorded) | refused (by kit, before running) | violation
    run_id: str | None = None
    detail: str = ""
    seconds: float = 0.0
    shown: dict[str, Any] | None = None  # the parameters as kept and printed: redacted by the workflow's policy

    @property
    def ok(self) -> bool:
        return self.verdict != "violation"

    def label(self) -> str:
        """`boundary case {case_id: ''}`: the varied parameters (all of them when none differ)."""
        params = self.params if self.shown is None else self.shown
        shown = {k: params[k] for k in (self.varied or sorted(params))}
        return "boundary case {" + ", ".join(f"{k}: {_shown(v)}" for k, v in shown.items()) + "}"

    def record(self) -> dict[str, Any]:
        """What the verification record keeps of a case: values cut short, the verdict and the run."""
        return {
            "params": {k: _kept(v) for k, v in (self.params if self.shown is None else self.shown).items()},
            "varied": self.varied,
            "explicit": self.explicit,
            "verdict": self.verdict,
            "run_id": self.run_id,
            "detail": shorten(self.detail, 300),
        }


def _shown(value: Any) -> str:
    """A value as Python writes it, cut short; a long string says how long it is."""
    text = shorten(repr(value), 60)
    return f"{text} ({len(value)} characters)" if isinstance(value, str) and len(value) > 50 else text


def _kept(value: Any) -> Any:
    """A parameter value for the record: as it is, unless long (then its length and a preview)."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= 200:
        return value
    return {"kit:shortened": brief(value, 80), "json_length": len(text)}


@dataclass
class BoundaryResult:
    cases: list[BoundaryCase] = field(default_factory=list)
    failure: BoundaryCase | None = None  # the failing case, shrunk
    aborted: str | None = None  # why no case could run (the principal may not run the workflow)
    shrink_cut: bool = False  # shrinking stopped at SHRINK_BUDGET runs
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.failure is None and self.aborted is None

    def problem(self) -> str | None:
        if self.aborted:
            return f"boundary cases could not run: {self.aborted}"
        if self.failure is not None:
            return f"{self.failure.label()}: {self.failure.detail}"
        return None


# ---- values from declared types ------------------------------------------------


def _types_of(spec: ParamSpec) -> list[str] | None:
    if spec.type is None:
        return None
    return [spec.type] if isinstance(spec.type, str) else list(spec.type)


def boundary_values(spec: ParamSpec) -> list[Any]:
    """The values that break code most often, for a parameter's declared type (its enum when it has one)."""
    if spec.enum is not None:
        return list(spec.enum)
    types = _types_of(spec) or ["string", "number", "null"]
    values: list[Any] = []
    for kind in types:
        values += {
            "string": ["", "   \t\n ", UNICODE_STRING, LONG_STRING],
            "number": [0, -1, 1e308, -1e308],
            "integer": [0, -1, 10**18, -(10**18)],
            "boolean": [True, False],
            "null": [None],
            "object": [{}],
            "array": [[]],
        }.get(kind, [])
    return _distinct(values)


def _distinct(values: list[Any]) -> list[Any]:
    seen, out = set(), []
    for value in values:
        key = _key(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _key(value: Any) -> str:
    """Tells 1 from 1.0 and True from 1, as a kernel would."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False) + type(value).__name__


def plain_value(spec: ParamSpec) -> Any:
    """A harmless value of the type, for a required parameter no scenario gives."""
    if spec.enum:
        return spec.enum[0]
    kind = (_types_of(spec) or ["string"])[0]
    return {"string": "a", "number": 1.0, "integer": 1, "boolean": True, "object": {}, "array": []}.get(kind)


def strategy_for(spec: ParamSpec):
    """A Hypothesis strategy of JSON values the declared type admits."""
    from hypothesis import strategies as st

    if spec.enum is not None:
        return st.sampled_from(list(spec.enum))
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()
    )
    by_type = {
        "string": st.text(),
        "number": st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
        "integer": st.integers(),
        "boolean": st.booleans(),
        "null": st.none(),
        "object": st.dictionaries(st.text(max_size=8), scalars, max_size=4),
        "array": st.lists(scalars, max_size=4),
    }
    chosen = [by_type[t] for t in (_types_of(spec) or []) if t in by_type]
    return st.one_of(*chosen) if chosen else scalars


# ---- running the cases ---------------------------------------------------------


@contextmanager
def _hypothesis_home(storage: Path | None) -> Iterator[None]:
    """Hypothesis writes caches under `./.hypothesis` unless told otherwise: keep them in kit's home."""
    if storage is None:
        yield
        return
    from hypothesis import configuration

    before = getattr(configuration, "__hypothesis_home_directory", None)
    configuration.set_hypothesis_home_dir(storage)
    try:
        yield
    finally:
        configuration.set_hypothesis_home_dir(before)


class BoundaryViolation(Exception):
    """Raised inside the Hypothesis test so that it shrinks the failing input."""

    def __init__(self, case: BoundaryCase):
        super().__init__(case.detail)
        self.case = case


def classify(case: BoundaryCase, outcome: RunOutcome) -> None:
    """A case's verdict from its run: succeeded, failed in a step with a recorded error, or a violation."""
    case.run_id = outcome.run_id
    if outcome.status != "failed":
        case.verdict = "succeeded" if outcome.status == "succeeded" else "violation"
        case.detail = f"the run ended {outcome.status}"
        return
    failure = next((f for f in outcome.failures if f.error_type in VIOLATIONS), None)
    failure = failure or next((f for f in outcome.failures if not f.error_type), None)
    if failure is not None:
        case.verdict = "violation"
        what = failure.error_type or "failed with no error recorded"
        case.detail = (
            f"step {failure.step_id}: {what}: {shorten(failure.error_message or '', 300)} (run {outcome.run_id})"
        )
        return
    first = outcome.failures[0] if outcome.failures else None
    case.verdict = "failed"
    case.detail = (
        f"step {first.step_id}: {first.error_type}: {shorten(first.error_message or '', 200)}"
        if first
        else "the run failed"
    )


class BoundaryCheck:
    """Runs a workflow's boundary cases through one coordinator and keeps every case it tried."""

    def __init__(
        self,
        coordinator: Coordinator,
        workflow: Workflow,
        env: str | None,
        principal: str,
        base: dict[str, Any],
        engine: str,
        llm_mode: str,
        examples: int | None = None,
        progress: bool = False,
        storage: Path | None = None,
        redactor: Redactor | None = None,
    ):
        self.coordinator, self.workflow, self.env, self.principal = coordinator, workflow, env, principal
        self.storage = storage  # where Hypothesis keeps its caches (under .kit/, not the working directory)
        self.redactor = redactor or Redactor()  # a base value may be a secret a scenario read from the environment
        self.base, self.engine, self.llm_mode = base, engine, llm_mode
        self.examples = DEFAULT_EXAMPLES if examples is None else examples
        self.progress = progress
        self.tried: dict[str, BoundaryCase] = {}
        self.explicit = self.explicit_cases()
        self.aborted: str | None = None
        self.failing_runs = 0  # runs made once a failure was found: the shrinking's cost

    def explicit_cases(self) -> list[dict[str, Any]]:
        """Each parameter's boundary values, one parameter varied at a time from the base."""
        cases = []
        for name, spec in self.workflow.spec.params.items():
            for value in boundary_values(spec):
                if _key(value) != _key(self.base.get(name)):
                    cases.append({**self.base, name: value})
        return cases

    def run_case(self, params: dict[str, Any]) -> BoundaryCase:
        """One run, recorded; a KitError before the run is a refusal, any other exception a crash of kit."""
        varied = sorted(k for k in params if _key(params[k]) != _key(self.base.get(k)))
        case = BoundaryCase(
            params=params, varied=varied, explicit=params in self.explicit, shown=self.redactor.named(params)
        )
        t0 = time.perf_counter()
        try:
            outcome = self.coordinator.run(
                RunRequest(
                    workflow=self.workflow,
                    params=params,
                    principal=self.principal,
                    env=self.env,
                    engine=self.engine,
                    scenario_id=BOUNDARY_SCENARIO,
                    llm=LLMSettings(mode=self.llm_mode, recordings=None),
                )
            )
        except PermissionDenied as exc:
            self.aborted = exc.message
            case.verdict, case.detail = "refused", exc.message
        except KitError as exc:
            case.verdict, case.detail = "refused", shorten(exc.message, 300)
        except Exception as exc:  # noqa: BLE001 - a crash of kit is what this check looks for
            case.verdict, case.detail = "violation", f"kit crashed: {type(exc).__name__}: {shorten(str(exc), 300)}"
        else:
            classify(case, outcome)
        case.seconds = time.perf_counter() - t0
        case.detail = self.redactor.text(case.detail) or ""
        return case

    def run(self) -> BoundaryResult:
        from hypothesis import HealthCheck, Phase, Verbosity, example, given, settings
        from hypothesis import strategies as st

        params = self.workflow.spec.params
        result = BoundaryResult(
            settings={
                "examples": self.examples,
                "explicit_cases": len(self.explicit),
                "default_step_timeout": DEFAULT_STEP_TIMEOUT,
                "shrink_budget": SHRINK_BUDGET,
                "engine": self.engine,
                "cache": True,
                "llm_mode": self.llm_mode,
                "principal": self.principal,
                "scenario_id": BOUNDARY_SCENARIO,
                "base": {k: _kept(v) for k, v in self.redactor.named(self.base).items()},
                "hypothesis": {"derandomize": True, "database": None},
            }
        )
        if not params:
            return result
        shown = Progress(len(self.explicit) + self.examples, "boundary cases", enabled=None if self.progress else False)
        failed: list[BoundaryCase] = []

        def check(values: dict[str, Any]) -> None:
            key = _key(values)
            if key not in self.tried:
                if self.aborted or (failed and self.failing_runs >= SHRINK_BUDGET):
                    result.shrink_cut = bool(failed)
                    return  # past the budget an untried input counts as passing: shrinking stops here
                case = self.run_case(values)
                self.tried[key] = case
                self.failing_runs += bool(failed)
                shown.advance(case.verdict, passed=case.ok)
            case = self.tried[key]
            if not case.ok:
                failed.append(case)
                raise BoundaryViolation(case)

        strategy = st.fixed_dictionaries(
            {name: st.one_of(st.just(self.base[name]), strategy_for(spec)) for name, spec in params.items()}
        )
        test = given(strategy)(check)
        for values in reversed(self.explicit):
            test = example(values)(test)
        phases = [Phase.explicit] + ([Phase.generate, Phase.shrink] if self.examples > 0 else [])
        test = settings(
            max_examples=max(self.examples, 1),
            phases=phases,
            deadline=None,
            derandomize=True,
            database=None,
            report_multiple_bugs=False,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )(test)
        with _hypothesis_home(self.storage):
            try:
                test()
            except BoundaryViolation as exc:
                result.failure = exc.case
            finally:
                shown.close()
        result.cases = list(self.tried.values())
        result.aborted = self.aborted
        return result
