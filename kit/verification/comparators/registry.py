"""The comparators by name, and checking an expectation with one.

Comparators are plugins of the entry point group ``kit.comparators``
(`kit.base.plugins`); kit's own are declared there too, and their names cannot be
taken. `register` adds one in-process. `check_spec` is what the scenario loader asks
for each expectation (which comparator, is its spec right); `evaluate` checks an
expectation against a run's outputs and never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kit.base.display import brief
from kit.base.plugins import Registry, UnknownPlugin
from kit.base.values import jsonable
from kit.errors import InvalidInput
from kit.spec.scenario import PathNotFound, SpecProblem, extract
from kit.verification.comparators.base import Comparator, CompareContext, Outcome

ENTRY_POINT_GROUP = "kit.comparators"


def _instantiate(obj: Any, name: str) -> Comparator:
    comp = obj() if isinstance(obj, type) else obj
    if not callable(getattr(comp, "compare", None)):
        raise TypeError(f"{obj!r} is not a Comparator (it has no compare method)")
    if not getattr(comp, "name", None):
        try:
            comp.name = name
        except AttributeError:
            pass
    if not isinstance(getattr(comp, "options", frozenset()), frozenset):
        comp.options = frozenset(comp.options)
    return comp


COMPARATORS = Registry(ENTRY_POINT_GROUP, "comparator", _instantiate)


def register(comparator: Comparator | type[Comparator], name: str | None = None) -> Comparator:
    """Add (or replace) a comparator by name in this process, e.g. from a conftest."""
    key = name or getattr(comparator, "name", "")
    if not key:
        raise ValueError("a comparator needs a name")
    return COMPARATORS.register(key, comparator)


def reset_registry() -> None:
    """Forget discovered plugins and programmatic registrations; the next lookup rediscovers."""
    COMPARATORS.reset()


def available() -> list[str]:
    """The names of every usable comparator, sorted."""
    return COMPARATORS.names()


def get_comparator(name: str) -> Comparator:
    """The comparator named `name`; an unknown name is an InvalidInput listing the known ones."""
    try:
        return COMPARATORS.get(name)
    except UnknownPlugin as exc:
        raise InvalidInput(exc.message) from None


def resolve_spec(spec: Any) -> tuple[str, Comparator]:
    """The comparator a spec names, checking its keys; raises ValueError with a message.

    A spec is a mapping with exactly one comparator key; every other key must be
    one of that comparator's options.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"expected a mapping with one comparator, e.g. {{equals: ...}}, got {brief(spec)}")
    reg = {name: COMPARATORS.get(name) for name in COMPARATORS.names()}
    keys = [k for k in spec]
    named = [k for k in keys if k in reg]
    if len(named) > 1:
        # a key that is also another candidate's option (a plugin's name) is an option
        fits = [k for k in named if all(o in reg[k].options for o in keys if o != k)]
        if len(fits) == 1:
            named = fits
        else:
            raise ValueError(f"several comparators ({', '.join(named)}); an expectation takes exactly one")
    if not named:
        if not keys:
            raise ValueError(f"no comparator given (known: {', '.join(sorted(reg))})")
        unknown = next((k for k in keys if not any(k in c.options for c in reg.values())), keys[0])
        if COMPARATORS.error(unknown):
            raise ValueError(f"comparator {unknown!r} could not be loaded: {COMPARATORS.error(unknown)}")
        raise ValueError(f"unknown comparator {unknown!r} (known: {', '.join(sorted(reg))})")
    name = named[0]
    comp = reg[name]
    refused = [k for k in keys if k != name and k not in comp.options]
    if refused:
        accepted = ", ".join(sorted(comp.options)) or "none"
        raise ValueError(f"{name} does not accept {', '.join(repr(k) for k in refused)} (its options: {accepted})")
    return name, comp


def check_spec(spec: dict, base_dir: Path, root: Path | None = None) -> str:
    """The comparator an expectation's spec names, its spec checked (what scenario loading asks).

    Raises `SpecProblem` naming the spec key the problem is about, so it is reported at its line.
    """
    try:
        name, comp = resolve_spec(spec)
    except ValueError as exc:
        raise SpecProblem(str(exc)) from None
    try:
        comp.check_spec(spec, CompareContext(base_dir=base_dir, root=root))
    except ValueError as exc:
        key = next((k for k in spec if str(exc).startswith(f"{k}:")), name)
        raise SpecProblem(str(exc), key) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's check_spec must not crash the loader
        raise SpecProblem(f"comparator {name} could not check its spec: {type(exc).__name__}: {exc}", name) from None
    return name


_MISSING = object()


def run_comparator(comparator: Comparator, spec: dict, actual: Any, ctx: CompareContext) -> Outcome:
    """``comparator.compare`` that never raises: an exception becomes verdict ``error``."""
    try:
        outcome = comparator.compare(spec, actual, ctx)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"comparator {comparator.name!r} returned {type(outcome).__name__}, not an Outcome")
        return outcome
    except Exception as exc:  # noqa: BLE001 - the contract is: never crash the caller
        try:
            expected = comparator.expected(spec, ctx)
        except Exception:  # noqa: BLE001
            expected = jsonable(spec)
        return Outcome(
            "error", f"comparator {comparator.name} raised {type(exc).__name__}: {exc}", expected, jsonable(actual)
        )


def evaluate(expectation: Any, outputs: Mapping[str, Any] | Callable[[str, str], Any], ctx: CompareContext) -> Outcome:
    """Check one expectation against a run's outputs; never raises.

    `outputs` maps ``"STEP.OUTPUT"`` (or ``(step, output)``) to the output's value, or
    is a callable ``(step, output) -> value`` raising KeyError for an output the run
    did not produce. A missing output, or a path that does not exist in it, is a
    ``fail``; a comparator that cannot run is an ``error``.
    """
    step, output = expectation.step, expectation.output
    try:
        comp = get_comparator(expectation.comparator) if expectation.comparator else resolve_spec(expectation.spec)[1]
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", getattr(exc, "message", str(exc)), jsonable(expectation.spec), None)
    try:
        expected = comp.expected(expectation.spec, ctx)
    except Exception:  # noqa: BLE001
        expected = jsonable(expectation.spec)

    value: Any = _MISSING
    try:
        if callable(outputs) and not isinstance(outputs, Mapping):
            value = outputs(step, output)
        else:
            key = f"{step}.{output}"
            if key in outputs:
                value = outputs[key]
            elif (step, output) in outputs:
                value = outputs[(step, output)]
    except KeyError:
        value = _MISSING
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", f"cannot read output {step}.{output}: {type(exc).__name__}: {exc}", expected, None)
    if value is _MISSING:
        return Outcome("fail", f"output {step}.{output} was not produced", expected, None)

    if expectation.path:
        try:
            value = extract(value, expectation.path, label=f"{step}.{output}", load_table=ctx.load_table)
        except PathNotFound as exc:
            return Outcome("fail", str(exc), expected, None)
        except Exception as exc:  # noqa: BLE001
            return Outcome("error", f"cannot follow {expectation.key}: {type(exc).__name__}: {exc}", expected, None)
    return run_comparator(comp, expectation.spec, value, ctx)
