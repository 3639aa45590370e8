"""Provenance: what a run records about where it ran (DESIGN section 6), besides its bundle.

The git commit of the project, the kit and Python versions, and a digest of the
installed packages: enough to tell, after something went wrong, whether the
machinery around the bundle changed.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from kit.base.version import __version__ as kit_version


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def packages_hash() -> str:
    """A digest of the installed distributions, read from their metadata folders' names.

    A `*.dist-info` folder is named NAME-VERSION, so listing the folders on sys.path
    is enough, and far cheaper than reading every distribution's metadata.
    """
    names = set()
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names.update(e.name for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def provenance(root: Path) -> dict[str, Any]:
    """The run row's provenance columns."""
    return {
        "git_commit": git_commit(root),
        "kit_version": kit_version,
        "python_version": platform.python_version(),
        "packages_hash": packages_hash(),
    }
