"""Files' stamps: a cache of something read from files (a workflow's imports, git's HEAD, the installed
packages) is still good while the stamps of the files it read are the same.

A stamp is the modification time and the size: the time alone can stay the same when a file is
written twice within the file system's clock tick.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def stamps(paths: Iterable[str | os.PathLike]) -> list[tuple[int, int] | None]:
    """Each file's (modification time in ns, size), or None for one that cannot be read."""
    found: list[tuple[int, int] | None] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found.append(None)
            continue
        found.append((stat.st_mtime_ns, stat.st_size))
    return found
