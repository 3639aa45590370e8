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

_COMMITS: dict[Path, tuple[list, str | None]] = {}


def git_commit(root: Path) -> str | None:
    """The project's HEAD commit (`git rev-parse HEAD`), asked again only when what it reads changed:
    a suite's scenarios are one run each, and a `git` process costs 2-3 ms a run."""
    stamps = _head_stamps(root)
    cached = _COMMITS.get(root)
    if stamps is not None and cached is not None and cached[0] == stamps:
        return cached[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = (out.stdout.strip() or None) if out.returncode == 0 else None
    if stamps is not None:
        _COMMITS[root] = (stamps, commit)
    return commit


def _head_stamps(root: Path) -> list | None:
    """The modification times and sizes of what HEAD resolves through (``.git/HEAD``, the branch's ref,
    ``packed-refs``), when `root` holds a plain ``.git`` folder; None (ask git every time) otherwise."""
    git = root / ".git"
    files = [git / "HEAD", git / "packed-refs"]
    try:
        head = files[0].read_text()
    except OSError:
        return None
    if head.startswith("ref: "):
        files.append(git / head[5:].strip())
    stamps = []
    for f in files:
        try:
            stat = f.stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append(None)
    return [head, *stamps]


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
