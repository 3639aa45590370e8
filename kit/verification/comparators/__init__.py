"""Comparators: how a scenario's expectation is checked against a run's actual output.

A scenario file (DESIGN section 8) maps ``STEP.OUTPUT[.path]`` to a spec naming
exactly one comparator, plus the options that comparator accepts::

    recommend.decision.confidence: {approx: 0.8, abs: 0.1}
    fetch_case.payload: {table: expected/C-1042-payload.csv, ignore_order: true}

Every check ends in an :class:`Outcome`: a ``verdict`` (``pass``, ``fail`` or
``error``), a human ``detail`` saying why, and JSON-able renderings of what was
``expected`` and what was ``actual``. ``fail`` means the output differs from what
was expected; ``error`` means the check itself could not run (a broken expected
file, a comparator that raised). A comparator never crashes its caller:
:func:`evaluate` and :func:`run_comparator` turn exceptions into ``error``.

Built-ins: ``equals``, ``approx``, ``contains``, ``matches``, ``one_of``,
``schema`` (`json_values`), ``table`` (`table`), and ``judge`` (a model grades the output
against a rubric; `judge`). The registry and `evaluate` are in `registry`; what they share in `base`.

Writing a comparator plugin
---------------------------
Subclass :class:`Comparator`::

    # my_package/comparators.py
    from kit.verification.comparators import Comparator, Outcome

    class EvenComparator(Comparator):
        name = "even"                          # the key used in scenario files
        options = frozenset({"note"})          # other keys allowed beside it

        def check_spec(self, spec, ctx):
            # called when the scenario file is loaded; raise ValueError(message)
            # for a bad spec and kit reports it with the file and line
            if not isinstance(spec["even"], bool):
                raise ValueError("even: expected true or false")

        def compare(self, spec, actual, ctx):
            ok = isinstance(actual, int) and (actual % 2 == 0) == spec["even"]
            return Outcome("pass" if ok else "fail",
                           "" if ok else f"{actual!r} is not {'even' if spec['even'] else 'odd'}",
                           expected=spec["even"], actual=actual)

and register it under the entry point group ``kit.comparators`` in the
package's ``pyproject.toml``; the entry point's name is the key used in
scenario files::

    [project.entry-points."kit.comparators"]
    even = "my_package.comparators:EvenComparator"

The entry point may name a Comparator subclass (instantiated without
arguments) or an instance. Plugins are discovered lazily, once per process, on
the first lookup (`kit.base.plugins`, the same way for kit's own comparators);
built-in names cannot be overridden. A plugin that fails to
import is left out of :func:`available` and naming it in a scenario reports the
import error. :func:`register` adds one programmatically (in a notebook, a
conftest).

The interface in short:

- ``name``: the scenario key; ``options``: the other keys allowed in the spec.
- ``check_spec(spec, ctx)``: validate the spec (the whole dict as written) at load
  time; raise ``ValueError``. ``ctx.base_dir`` is the scenario file's folder.
- ``compare(spec, actual, ctx) -> Outcome``: ``actual`` is the output value at
  the expectation's path: a JSON value, or for a table output whatever the engine
  gives (a reference string, a DataFrame); ``ctx.load_table(ref)`` turns a
  reference into a DataFrame.
- ``expected(spec, ctx)``: the JSON-able rendering of what is expected (by default
  the comparator key's value, or the whole spec when it has options).
"""

from kit.verification.comparators.base import VERDICTS, Comparator, CompareContext, Outcome
from kit.verification.comparators.registry import (
    ENTRY_POINT_GROUP,
    available,
    check_spec,
    evaluate,
    get_comparator,
    register,
    reset_registry,
    resolve_spec,
    run_comparator,
)

__all__ = [
    "Outcome",
    "CompareContext",
    "Comparator",
    "get_comparator",
    "available",
    "check_spec",
    "register",
    "reset_registry",
    "resolve_spec",
    "run_comparator",
    "evaluate",
    "ENTRY_POINT_GROUP",
    "VERDICTS",
]
