"""Scenario files with their expectations bound to comparators: the loader every verification
command uses (`kit test`, `kit replay`, `kit capture`, the pytest plugin).

`kit.spec.scenario` parses a file; here each expectation's spec is checked by the
comparator it names, so an unknown comparator or a bad option is refused with the
file and line, like any other mistake in the file. Every file a scenario names (its
recordings, expected tables) must lie inside the project, symlinks followed
(DESIGN section 11).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kit.base.paths import OutsideRoot, inside
from kit.errors import InvalidInput
from kit.spec import scenario as spec
from kit.spec.project import find_root
from kit.spec.scenario import Scenario
from kit.verification.comparators import CompareContext, check_spec


def load_scenario(path: str | Path, text: str | None = None, root: str | Path | None = None) -> Scenario:
    """Load and check a scenario file; every problem is an InvalidInput naming file, line and key.

    `root` is the project (default: the one holding the file)."""
    path = Path(path)
    root = Path(root).resolve() if root is not None else find_root(path.resolve().parent)
    scenario = spec.load_scenario(path, text, check_spec=lambda s, base: check_spec(s, base, root))
    if scenario.recordings is not None:
        try:
            inside(root, scenario.recordings_path)
        except OutsideRoot as exc:
            raise InvalidInput(
                f"{scenario.where()}: recordings: {exc}: a scenario's files live in its project"
            ) from None
    scenario.root = root
    return scenario


def compare_context(
    scenario: Scenario, load_table: Callable[[Any], Any] | None = None, **services: Any
) -> CompareContext:
    """A CompareContext for a scenario's expectations (tables resolve beside the file, inside the project)."""
    ctx = CompareContext(base_dir=scenario.base_dir, services=dict(services), root=scenario.root)
    if load_table is not None:
        ctx.load_table = load_table
    return ctx
