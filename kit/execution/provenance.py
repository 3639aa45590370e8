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

from kit.base.stamps import stamps
from kit.base.version import __version__ as kit_version

_COMMITS: dict[Path, tuple[list, str | None]] = {}


def git_commit(root: Path) -> str | None:
    """The project's HEAD commit (`git rev-parse HEAD`), asked again only when what it reads changed:
    a suite's scenarios are one run each, and a `git` process costs 2-3 ms a run."""
    head = _head_stamps(root)
    if head == []:  # no repository: nothing to ask
        return None
    cached = _COMMITS.get(root)
    if head is not None and cached is not None and cached[0] == head:
        return cached[1]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = (out.stdout.strip() or None) if out.returncode == 0 else None
    if head is not None:
        _COMMITS[root] = (head, commit)
    return commit


def _head_stamps(root: Path) -> list | None:
    """What `git rev-parse HEAD` in `root` depends on, cheaply: the modification times and sizes of the
    repository's ``HEAD``, its branch's ref and ``packed-refs``, found as git finds them (the nearest
    ``.git`` folder above `root`), or ``[]`` when there is no repository at all. None (ask git every
    time) when git would look elsewhere: a ``.git`` file (a worktree, a submodule) or ``$GIT_DIR``."""
    if os.environ.get("GIT_DIR"):
        return None
    git = next((d / ".git" for d in (root.resolve(), *root.resolve().parents) if (d / ".git").exists()), None)
    if git is None:
        return []
    if not git.is_dir():
        return None
    files = [git / "HEAD", git / "packed-refs"]
    try:
        head = files[0].read_text()
    except OSError:
        return None
    if head.startswith("ref: "):
        files.append(git / head[5:].strip())
    return [head, *stamps(files)]


_PACKAGES: tuple[list, str] | None = None


def packages_hash() -> str:
    """A digest of the installed distributions, read from their metadata folders' names.

    A `*.dist-info` folder is named NAME-VERSION, so listing the folders on sys.path
    is enough, and far cheaper than reading every distribution's metadata. Listed again
    only when a folder on sys.path changed (an install adds or removes an entry).
    """
    global _PACKAGES
    folders = [Path(entry or ".") for entry in sys.path]
    seen = [str(f) for f in folders] + stamps(folders)
    if _PACKAGES is not None and _PACKAGES[0] == seen:
        return _PACKAGES[1]
    names = set()
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                names.update(e.name for e in it if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()
    _PACKAGES = (seen, digest)
    return digest


def provenance(root: Path) -> dict[str, Any]:
    """The run row's provenance columns."""
    return {
        "git_commit": git_commit(root),
        "kit_version": kit_version,
        "python_version": platform.python_version(),
        "packages_hash": packages_hash(),
    }
