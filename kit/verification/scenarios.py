"""Scenario files with their expectations bound to comparators: the loader every verification
command uses (`kit test`, `kit replay`, `kit capture`, the pytest plugin).

`kit.spec.scenario` parses a file; here each expectation's spec is checked by the
comparator it names, so an unknown comparator or a bad option is refused with the
file and line, like any other mistake in the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kit.spec import scenario as spec
from kit.spec.scenario import Scenario
from kit.verification.comparators import CompareContext, check_spec


def load_scenario(path: str | Path, text: str | None = None) -> Scenario:
    """Load and check a scenario file; every problem is an InvalidInput naming file, line and key."""
    return spec.load_scenario(path, text, check_spec=check_spec)


def compare_context(
    scenario: Scenario, load_table: Callable[[Any], Any] | None = None, **services: Any
) -> CompareContext:
    """A CompareContext for a scenario's expectations (tables resolve beside the file)."""
    ctx = CompareContext(base_dir=scenario.base_dir, services=dict(services))
    if load_table is not None:
        ctx.load_table = load_table
    return ctx
