"""kit's pytest plugin: scenario files are test items (DESIGN section 8).

Registered through the ``pytest11`` entry point, so ``pytest scenarios/`` collects
every scenario file (a ``.yaml``/``.yml`` file with a top-level ``scenario:`` key)
as one test item. Running the item runs the scenario's workflow through
:class:`kit.verification.suite.ScenarioRunner`, exactly as ``kit test`` does, comparisons
recorded in the project's ledger included. A failing item's report lists each
failing expectation with expected, actual and the comparator's explanation; an
invalid scenario fails with the loader's message (file, line, key) and no
traceback. A scenario's ``tags`` become markers: ``pytest -m pricing``.

The plugin also provides the ``kit_nb_regression`` fixture: a pytest-notebook
``NBRegressionFixture`` with kit's defaults for the diff noise papermill and
widgets add (see :mod:`kit.verification.nbregression`).

pytest loads this module in every run, this repository's own included, so it
imports nothing heavy at module level: kit's scenario machinery is imported
only when a YAML file is offered for collection, and the runner only when a
scenario runs. Disable it with ``-p no:kit``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest

# pytest-notebook's plugin warns about its own undocumented fields every time it is
# imported, which pytest does before any filterwarnings applies. Silence exactly those
# (when this plugin happens to load first; kit.nbregression filters them again).
warnings.filterwarnings("ignore", category=UserWarning, module=r"pytest_notebook(\.|$)")

_SUFFIXES = (".yaml", ".yml")
_RUNNERS = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kit_scenario: a kit scenario file run as a test (added by kit's plugin)")
    config.stash[_RUNNERS] = {}


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix.lower() not in _SUFFIXES:
        return None
    from kit.spec.scenario import is_scenario_file

    if not is_scenario_file(file_path):
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


class ScenarioInvalid(Exception):
    """The scenario cannot run: its file, or its workflow, is invalid."""


class ScenarioFailed(Exception):
    """At least one expectation does not hold."""

    def __init__(self, result: Any):
        super().__init__(result.name)
        self.result = result


class ScenarioFile(pytest.File):
    """A scenario file: one item, named by the scenario's id."""

    def collect(self):
        from kit.errors import KitError
        from kit.verification.scenarios import load_scenario

        try:
            scenario = load_scenario(self.path)
        except KitError as exc:
            # still an item: it fails when run, with the loader's message
            item = ScenarioItem.from_parent(self, name=self.path.name, scenario_id=None, invalid=exc.message)
            item.add_marker("kit_scenario")
            yield item
            return
        item = ScenarioItem.from_parent(self, name=scenario.id, scenario_id=scenario.id, invalid=None)
        item.add_marker("kit_scenario")
        for tag in scenario.tags:
            if isinstance(tag, str) and tag.strip() and not tag.startswith("_"):
                _register_marker(self.config, tag)
                item.add_marker(tag)
        yield item


def _register_marker(config: pytest.Config, name: str) -> None:
    """Declare a tag as a marker, so `--strict-markers` and `-m TAG` work without a warning."""
    known = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    if name not in known:
        config.addinivalue_line("markers", f"{name}: kit scenario tag")


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario_id: str | None, invalid: str | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.scenario_id = scenario_id
        self.invalid = invalid
        self.result = None  # the kit.verification.suite.ScenarioResult, once run

    def runtest(self) -> None:
        if self.invalid is not None:
            raise ScenarioInvalid(self.invalid)
        runner = _runner_for(self.config, self.path)
        # `workflow: NAME` is looked up from the working directory first
        # (Project.find_workflow), so run from the project's root, as `kit test` is
        cwd = os.getcwd()
        os.chdir(runner.project.root)
        try:
            result = self.result = runner.run(self.path)
        finally:
            os.chdir(cwd)
        if result.run_id:
            self.user_properties.append(("run_id", result.run_id))
        if result.invalid is not None:
            raise ScenarioInvalid(result.invalid)
        if not result.passed:
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None):
        if isinstance(excinfo.value, ScenarioInvalid):
            return f"invalid scenario: {excinfo.value}"
        if isinstance(excinfo.value, ScenarioFailed):
            return _failure_text(excinfo.value.result)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"scenario {self.scenario_id or self.path.name}"


def _failure_text(result: Any) -> str:
    from kit.verification.suite import explain

    failures = result.failures()
    lines = [
        f"scenario {result.name}: {len(failures)} of {len(result.checks)} expectation(s) failed "
        f"(run {result.run_id}, {result.run_status})"
    ]
    for expectation, outcome in failures:
        lines.append(explain(expectation, outcome, result.scenario.where(expectation)))
    return "\n".join(lines)


def _runner_for(config: pytest.Config, path: Path):
    """One ScenarioRunner per project per session: the project is the one holding the file."""
    from kit.spec.project import Project, find_root
    from kit.verification.suite import ScenarioRunner

    root = find_root(Path(path).parent)
    runners = config.stash.setdefault(_RUNNERS, {})
    if root not in runners:
        runners[root] = ScenarioRunner(Project.discover(root), command="pytest")
    return runners[root]


@pytest.fixture
def kit_nb_regression(request: pytest.FixtureRequest):
    """A pytest-notebook NBRegressionFixture with kit's diff defaults (kit.verification.nbregression).

    ``kit_nb_regression.check(path)`` executes the notebook (working directory: its
    folder) and diffs it against its stored outputs. Of pytest-notebook's options,
    ``--nb-force-regen`` (rewrite the stored outputs instead of failing) and
    ``--nb-exec-timeout`` apply.
    """
    from kit.verification.nbregression import regression_fixture

    overrides: dict[str, Any] = {}
    if request.config.getoption("nb_force_regen", default=None):
        overrides["force_regen"] = True
    timeout = request.config.getoption("nb_exec_timeout", default=None)
    if timeout is not None:
        overrides["exec_timeout"] = int(timeout)
    return regression_fixture(**overrides)
