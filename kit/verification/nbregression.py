"""Notebook regression tests with pytest-notebook, and kit's defaults for its diff noise.

pytest-notebook re-executes a notebook and diffs it against the outputs stored in
the file. Correct notebooks still differ in places that say nothing about their
results: the kernel's ``language_info``, the metadata papermill and nbclient add
(``/metadata/papermill``, per-cell ``papermill`` and ``execution`` timings),
execution counts of cells run out of order in Jupyter, widget state and widget
ids, and values that change on every run (the time, kit run ids, artifact
digests, object addresses). :data:`DIFF_IGNORE` and :data:`DIFF_REPLACE` remove
exactly that and nothing else, so a changed table, number or message still
fails the test.

```python
def test_start_notebook(kit_nb_regression):          # the fixture from kit's pytest plugin
    kit_nb_regression.check("notebooks/start.ipynb")  # runs in the notebook's folder
```

or, without the fixture, ``regression_fixture(exec_timeout=60).check(path)``.
``--nb-force-regen`` (pytest-notebook's option) rewrites the stored outputs.

Timestamps are replaced only where they look like "now": ISO times with fractional
seconds or with a UTC offset (``2026-11-03 10:22:33.123456``,
``2026-11-03T10:22:33Z``). Dates and times of day that are data
(``2026-03-27``, ``2025-04-26 11:31:00``) are compared as they are.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["DIFF_IGNORE", "DIFF_REPLACE", "regression_fixture"]

#: Diff paths that never count (pytest-notebook ``diff_ignore``).
DIFF_IGNORE: tuple[str, ...] = (
    # the kernel that ran it, and who ran it
    "/metadata/language_info",
    "/metadata/papermill",
    "/metadata/widgets",
    "/cells/*/metadata/papermill",
    "/cells/*/metadata/execution",
    # cells run out of order in Jupyter number differently; the outputs are what count
    "/cells/*/execution_count",
    "/cells/*/outputs/*/execution_count",
    # widgets: a fresh model id on every run (the widget's state is in /metadata/widgets)
    "/cells/*/outputs/*/data/application/vnd.jupyter.widget-view+json",
    # pytest-notebook's own default: tracebacks carry paths and colour codes
    "/cells/*/outputs/*/traceback",
)

_OUTPUTS = "/cells/*/outputs"

#: Regex replacements applied to both notebooks before diffing
#: (pytest-notebook ``diff_replace``: ``(path, regex, replacement)``).
DIFF_REPLACE: tuple[tuple[str, str, str], ...] = (
    # now-like timestamps: fractional seconds, optionally an offset or Z
    (_OUTPUTS, r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}\.\d+(?:Z|[+-]\d{2}:?\d{2})?(?![\d.])", "<TIMESTAMP>"),
    # ... or with an offset or Z and whole seconds
    (_OUTPUTS, r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})(?![\d.:])", "<TIMESTAMP>"),
    # kit run ids: 20261103-102233-123-0123456789abcdef (kit.base.clock.new_run_id; 4 hex digits before)
    (_OUTPUTS, r"\b\d{8}-\d{6}-\d{3}-(?:[0-9a-f]{16}|[0-9a-f]{4})\b", "<RUN_ID>"),
    # how long a kit run took: "run <RUN_ID> succeeded in 5.3s"
    (_OUTPUTS, r"\b(succeeded|failed|waiting|rejected|cancelled) in \d+(?:\.\d+)?s\b", r"\1 in <SECONDS>s"),
    # kit.idempotency_key() outside a run: fixed per kernel, new in the next
    (_OUTPUTS, r"standalone-[0-9a-f]{24}", "standalone-<KEY>"),
    # artifact references and object-store paths: content digests
    (_OUTPUTS, r"artifact:sha256:[0-9a-f]{64}", "artifact:sha256:<DIGEST>"),
    (_OUTPUTS, r"objects/[0-9a-f]{2}/[0-9a-f]{62}", "objects/<DIGEST>"),
    # default reprs: <Foo object at 0x7f3b2c1d0e50>
    (_OUTPUTS, r"\bat 0x[0-9a-fA-F]{6,16}\b", "at 0x<ADDR>"),
)


def regression_fixture(**overrides: Any):
    """A ``pytest_notebook.nb_regression.NBRegressionFixture`` configured with kit's defaults.

    Defaults: ``diff_ignore=DIFF_IGNORE``, ``diff_replace=DIFF_REPLACE``, no colour in
    the diff (it goes into test reports), ``exec_timeout=120`` seconds a cell, the
    notebook's folder as working directory. Keyword arguments override any field
    of the fixture; a ``diff_ignore``/``diff_replace`` given replaces kit's, so to
    extend them say ``diff_ignore=DIFF_IGNORE + ("/cells/3/outputs",)``. Lists are
    accepted where pytest-notebook wants tuples.
    """
    with warnings.catch_warnings():
        # pytest-notebook warns about its own undocumented attrs fields at import
        warnings.simplefilter("ignore", UserWarning)
        from pytest_notebook.nb_regression import NBRegressionFixture

    settings: dict[str, Any] = {
        "diff_ignore": DIFF_IGNORE,
        "diff_replace": DIFF_REPLACE,
        "diff_use_color": False,
        "exec_timeout": 120,
    }
    settings.update(overrides)
    for key in ("diff_ignore", "diff_replace", "post_processors", "cov_source"):
        value = settings.get(key)
        if isinstance(value, list):
            settings[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    if settings.get("exec_cwd") is not None:
        settings["exec_cwd"] = str(settings["exec_cwd"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return NBRegressionFixture(**settings)
