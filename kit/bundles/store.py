"""The workflow store as storage: a directory or any fsspec URL holding published bundles (DESIGN section 12).

Its layout is public, so other tools can read it::

    objects/sha256/<2>/<62>              file contents by digest
    bundles/<bundle_id>/lock.json        the bundle's lock (it hashes to the bundle id)
    bundles/<bundle_id>/records/<d>.json verification records, each named by its statement's sha256
    index/<name>/<version>.json          bundle id, description, tags, contract, publisher, time
    index/<name>/<version>.yank.json     a yank: reason, principal, time
    channels/<name>/<env>.jsonl          promotion history, hash-chained
    channels/<name>/<env>/<seq>.json     each promotion entry, created exclusively (see below)

Writes are ordered so that nothing half-written is ever visible: objects first, then the
lock and records, the index entry last; each file is written whole (a temporary file
renamed into place locally, one PUT on S3). Files under `index/` are created exclusively,
never overwritten, so of two publishers racing for one version exactly one wins:
locally with a hard link of a finished temporary file (atomic and exclusive), on S3 with
a conditional PUT (`If-None-Match: *`), in `memory://` by fsspec's `xb` under a lock
(one process only); elsewhere by fsspec's `pipe_file(mode="create")` as the backend
implements it, which for a backend without conditional writes is check-then-write:
`exclusive` says which, and `kit publish` warns when it is not known to be exclusive.
A promotion claims its sequence number the same way (`channels/<name>/<env>/<seq>.json`),
then rewrites the `.jsonl`; readers also take claimed entries the `.jsonl` does not hold
yet, so a promoter killed in between loses nothing.

Every read is checked: an object re-hashed against its name, a lock against the bundle
id, a channel's hash chain. What does not match is a `StoreDamaged` (exit 1) naming the
file and both digests.

For the layers above (publish, install, promote, and composition, which takes
components and steps from the store by version range)::

    store = WorkflowStore.open(configured_url(project))  # kit.yaml's store.url, relative to the project;
                                                    # StoreUnavailable (exit 2) if it cannot be opened
    version, bundle_id = store.resolve(name, spec)  # newest match not yanked; `==` reaches yanked ones;
                                                    # NoMatch (exit 2) lists what is published
    lock = store.lock_of(bundle_id)                 # the lock, checked against the id
    lock = store.lock_of_version(name, version, bundle_id)  # ... and against the index's name and version
    manifest = store.fetch(bundle_id, into)         # every file verified; `into` appears whole or not at all
    lock = fetched_lock(into, bundle_id)            # later: a fetched bundle's lock, its files re-hashed

Verification records and their signatures are checked above this layer
(`kit.bundles.admission.check_records`): that is what `kit install` and `kit promote` add to
`fetch`.

This module imports neither verification nor execution: it is storage only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.base.clock import now
from kit.base.digests import canonical_bytes, digest, is_sha256, sha256_bytes, sha256_file
from kit.errors import InvalidInput, KitError

GENESIS = "0" * 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
TEMP_PREFIX = ".tmp-"
_MEMORY_CREATE = threading.Lock()  # fsspec's memory `xb` checks, then writes: one creator at a time
LOCK_FILE = ".lock.json"  # a fetched bundle's lock, beside its files (hidden: not one of the bundle's files)


class StoreUnavailable(InvalidInput):
    """A store that does not exist or cannot be opened (exit 2)."""


class StoreDamaged(KitError):
    """Something in the store does not match what refers to it, or cannot be read (exit 1)."""


class NoMatch(InvalidInput):
    """No published version matches what was asked for (exit 2); the message lists what exists."""


class VersionTaken(InvalidInput):
    """A version already published with another bundle (exit 2)."""


def store_time() -> str:
    """Now as the store writes times: ISO 8601, UTC, with a Z."""
    return now().isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> Any:
    """An ISO 8601 time as naive UTC (a time without a zone is taken as UTC); ValueError if unreadable."""
    from datetime import UTC, datetime

    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def configured_url(project, given: str | None = None) -> str | None:
    """The store a command uses: `given` (`--store`), else kit.yaml's `store.url`, where a folder is relative to
    the project (not to the working directory); None when there is neither."""
    if given:
        return given
    url = (project.settings.get("store") or {}).get("url")
    if url and "://" not in url:
        url = str((project.root / Path(url).expanduser()).resolve())
    return url


def open_configured(project, given: str | None = None, needed_for: str = "") -> WorkflowStore:
    """The store `--store` names (`given`), else kit.yaml's; InvalidInput saying how to name one when neither
    does (`needed_for` prefixes the message: who needed it)."""
    url = configured_url(project, given)
    if not url:
        raise InvalidInput(
            f"{needed_for}no store given: pass --store STORE, or set store: {{url: PATH or fsspec URL}} in "
            f"{project.root / 'kit.yaml'}"
        )
    return WorkflowStore.open(url)


def installed_dir(project, bundle_id: str) -> Path:
    """Where a project keeps a bundle fetched from the store: `.kit/installed/<bundle_id>/`."""
    return project.home / "installed" / bundle_id


def check_name(name: str, what: str = "workflow name") -> str:
    """A name the store can hold as a folder: letters, digits, `.`, `_`, `-`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(f"{what} {name!r} cannot be stored: use letters, digits, '.', '_' and '-'")
    return name


def parse_version(text: str):
    """A PEP 440 version (`packaging.version.Version`); InvalidInput when it is not one."""
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(text))
    except InvalidVersion:
        raise InvalidInput(f"version {text!r} is not a PEP 440 version (like 1.2.0): the store cannot order it")


def parse_spec(text: str):
    """A PEP 440 specifier set (`~=1.3`, `>=1.2,<2`, `==1.3.0`); a bare version means `==` it; "" means any."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    text = (text or "").strip()
    if text and text[0].isdigit():
        text = "==" + text
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise InvalidInput(f"{text!r} is not a version specifier (try ~=1.3, >=1.2,<2 or ==1.3.0)") from None


def split_ref(ref: str) -> tuple[str, str]:
    """`NAME@SPEC` as (name, spec); a bare NAME has the spec "" (any version)."""
    name, _, spec = ref.partition("@")
    return check_name(name.strip()), spec.strip()


def pins_exactly(spec) -> bool:
    """Whether a specifier set pins one version (`==1.3.0`, `===1.3.0`): only then may a yanked one match."""
    items = list(spec)
    return len(items) == 1 and items[0].operator in ("==", "===") and "*" not in items[0].version


def matching_versions(wanted, versions: list[PublishedVersion]) -> list[PublishedVersion]:
    """The versions a specifier set admits, oldest first; pre-releases only when asked for or when nothing
    else matches (PEP 440, as pip does)."""
    admitted = {str(v) for v in wanted.filter([v.parsed for v in versions])}
    return [v for v in versions if str(v.parsed) in admitted]


def entry_hash(entry: dict[str, Any]) -> str:
    """A channel entry's hash: the sha256 of its canonical JSON without the `hash` field."""
    return digest({k: v for k, v in entry.items() if k != "hash"})


@dataclass
class PublishedVersion:
    """One published version of a workflow, as the index's file names give it."""

    version: str
    yanked: bool = False
    parsed: Any = field(default=None, repr=False)


class WorkflowStore:
    """A store at `url`: a directory or any fsspec URL. Make it with `WorkflowStore.open`."""

    def __init__(self, fs, root: str, url: str, protocol: str):
        self.fs, self.root, self.url, self.protocol = fs, root.rstrip("/"), url, protocol

    # ---- opening -------------------------------------------------------------

    @classmethod
    def open(cls, url: str) -> WorkflowStore:
        """The store at `url`; StoreUnavailable when fsspec cannot open its scheme or it does not exist."""
        if not url or not str(url).strip():
            raise StoreUnavailable("no store given: pass --store STORE, or set store.url in kit.yaml")
        url = str(url).strip()
        if "://" not in url:  # a directory
            url = "file://" + str(Path(url).expanduser().resolve())
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec is a dependency
            raise StoreUnavailable("the store needs fsspec: pip install fsspec") from None
        scheme = url.split("://", 1)[0]
        try:
            fs, root = fsspec.core.url_to_fs(url)
        except (ValueError, KeyError):
            raise StoreUnavailable(
                f"store {url}: fsspec cannot open the scheme {scheme}:// (a store is a folder, file://, memory://, "
                "s3:// with s3fs installed, or another protocol fsspec knows)"
            )
        except ImportError as exc:
            raise StoreUnavailable(f"store {url}: the {scheme}:// scheme needs a package that is not installed: {exc}")
        fs.invalidate_cache()  # fsspec shares instances in a process: forget listings another process changed
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        store = cls(fs, root, url, "file" if protocol in ("file", "local") else protocol)
        store._check_exists()
        return store

    def _check_exists(self) -> None:
        try:
            if self.local:
                found = os.path.isdir(self.root)
            elif self.protocol == "memory":
                found = self.fs.exists(self.root) or self.fs.isdir(self.root)
            else:  # an object store: its bucket must exist; the prefix appears with the first file
                bucket = self.root.split("/", 1)[0]
                if not bucket:
                    raise StoreUnavailable(f"store {self.url} names no bucket: give {self.protocol}://BUCKET/PREFIX")
                try:  # not `exists`, which answers False for a refused key or an unreachable endpoint alike
                    self.fs.info(bucket)
                    found = True
                except FileNotFoundError:
                    found = False
        except StoreUnavailable:
            raise
        except Exception as exc:  # credentials, network, permissions: whatever the backend raises
            raise StoreUnavailable(f"store {self.url}: cannot be reached: {type(exc).__name__}: {exc}") from None
        if not found:
            what = "folder" if self.local or self.protocol == "memory" else "bucket"
            raise StoreUnavailable(
                f"store {self.url} does not exist (no such {what}); create it first to start an empty store"
            )

    @property
    def local(self) -> bool:
        return self.protocol == "file"

    @property
    def exclusive(self) -> str:
        """How this backend creates a file only if it does not exist yet (the `index/` rule)."""
        return {
            "file": "hard link of a finished temporary file (atomic, exclusive)",
            "s3": "conditional PUT, If-None-Match: * (atomic, exclusive)",
            "memory": "fsspec's xb mode under a lock (exclusive within one process)",
        }.get(self.protocol, f"fsspec's create mode as {self.protocol}:// implements it (maybe check-then-write)")

    @property
    def exclusive_known(self) -> bool:
        """Whether racing writers of one index file are known to be told apart on this backend."""
        return self.protocol in ("file", "s3", "memory")

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def where(self, path: str) -> str:
        """A store path as a user reads it: relative to the store, which is named once."""
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path

    # ---- raw reads and writes ------------------------------------------------

    def _read(self, path: str) -> bytes | None:
        """A file's bytes; None when it does not exist."""
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise StoreDamaged(f"store {self.url}: {self.where(path)} is a folder, not a file") from None

    def _list(self, path: str) -> list[str]:
        """Names (not paths) in a folder; [] when it does not exist."""
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def _write(self, path: str, data: bytes) -> None:
        """Write a whole file: locally through a temporary file renamed into place; elsewhere in one put."""
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        tmp = _temporary_beside(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _create(self, path: str, data: bytes) -> bool:
        """Create a file only if it does not exist; False (nothing written) when it does. See `exclusive`."""
        if not self.local:
            try:
                with _MEMORY_CREATE if self.protocol == "memory" else contextlib.nullcontext():
                    self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            return True
        tmp = _temporary_beside(path, data)
        try:
            os.link(tmp, path)  # fails if `path` exists: the file appears whole, and only once
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: O_EXCL (exclusive, not atomic for readers)
            try:
                with open(path, "xb") as fh:
                    fh.write(data)
            except FileExistsError:
                return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def _json(self, path: str, data: bytes, what: str) -> dict[str, Any]:
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise StoreDamaged(f"store {self.url}: {self.where(path)}: malformed {what}: {exc}") from None
        if not isinstance(value, dict):
            raise StoreDamaged(f"store {self.url}: {self.where(path)}: malformed {what}: not a JSON object")
        return value

    # ---- objects -------------------------------------------------------------

    def object_path(self, file_digest: str) -> str:
        return self._path("objects", "sha256", file_digest[:2], file_digest[2:])

    def put_file(self, source: str | Path, file_digest: str | None = None) -> bool:
        """Store a file's bytes under their digest; whether anything was written. An object already there is
        re-hashed and kept when intact, written again when damaged."""
        data = Path(source).read_bytes()
        actual = sha256_bytes(data)
        if file_digest is not None and actual != file_digest:
            raise KitError(f"{source} changed while it was being published (sha256:{actual}, expected {file_digest})")
        path = self.object_path(actual)
        existing = self._read(path)
        if existing is None:
            return self._create(path, data)
        if sha256_bytes(existing) == actual:
            return False
        self._write(path, data)
        return True

    def read_object(self, file_digest: str, what: str = "") -> bytes:
        """An object's bytes, re-hashed against its name; StoreDamaged naming `what`, the file and both digests."""
        path = self.object_path(file_digest)
        label = f"{what} ({self.where(path)})" if what else self.where(path)
        data = self._read(path)
        if data is None:
            raise StoreDamaged(f"store {self.url}: {label} is missing (sha256:{file_digest})")
        actual = sha256_bytes(data)
        if actual != file_digest:
            raise StoreDamaged(
                f"store {self.url}: {label} does not match: its lock says sha256:{file_digest}, "
                f"its bytes hash to sha256:{actual}"
            )
        return data

    # ---- bundles: locks and records ------------------------------------------

    def put_lock(self, lock: dict[str, Any]) -> None:
        from kit.bundles.lock import bundle_id

        if bundle_id(lock) != lock.get("bundle_id"):
            raise KitError("a lock that does not hash to its bundle id cannot be stored")
        self._create(self._path("bundles", lock["bundle_id"], "lock.json"), canonical_bytes(lock))

    def lock_of(self, bundle_id: str) -> dict[str, Any]:
        """A bundle's lock, checked: it hashes to `bundle_id` and says so."""
        from kit.bundles.lock import bundle_id as hash_of_lock

        if not is_sha256(bundle_id):
            raise StoreDamaged(f"store {self.url}: {bundle_id!r} is not a bundle id (64 hex digits)")
        path = self._path("bundles", bundle_id, "lock.json")
        data = self._read(path)
        if data is None:
            raise StoreDamaged(f"store {self.url}: bundle {bundle_id} has no lock ({self.where(path)} is missing)")
        lock = self._json(path, data, "lock")
        files = lock.get("files")
        if not isinstance(files, dict) or not all(is_sha256(v) for v in files.values()):
            raise StoreDamaged(
                f"store {self.url}: {self.where(path)}: malformed lock: `files` must map paths to sha256"
            )
        actual = hash_of_lock(lock)
        if actual != bundle_id or lock.get("bundle_id") != bundle_id:
            raise StoreDamaged(
                f"store {self.url}: {self.where(path)} does not match its bundle id: expected sha256:{bundle_id}, "
                f"the lock hashes to sha256:{actual}"
                + (f" and names {lock.get('bundle_id')}" if lock.get("bundle_id") not in (bundle_id, actual) else "")
            )
        for key in files:
            if key.startswith("/") or ".." in key.split("/"):
                raise StoreDamaged(f"store {self.url}: {self.where(path)}: file {key!r} lies outside the bundle")
        return lock

    def put_record(self, bundle_id: str, record_digest: str, data: bytes) -> bool:
        """Add a verification record (they accumulate) under its digest; False when it is there already."""
        if not is_sha256(record_digest):
            raise KitError(f"{record_digest!r} is not a record digest (sha256)")
        return self._create(self._path("bundles", bundle_id, "records", record_digest + ".json"), data)

    def records(self, bundle_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Every verification record of a bundle, as (the digest its name gives, the record as JSON). Checking
        a record against its name and the bundle is the verifier's business (`kit.store.common`)."""
        folder = self._path("bundles", bundle_id, "records")
        found = []
        for name in self._list(folder):
            if not name.endswith(".json") or name.startswith("."):
                continue
            path = f"{folder}/{name}"
            found.append((name[: -len(".json")], self._json(path, self._read(path) or b"", "verification record")))
        return found

    # ---- the index -----------------------------------------------------------

    def names(self) -> list[str]:
        return [n for n in self._list(self._path("index")) if not n.startswith(".")]

    def versions(self, name: str) -> list[PublishedVersion]:
        """The published versions of `name`, oldest first (PEP 440 order), from the index's file names."""
        from packaging.version import InvalidVersion
        from packaging.version import Version as Pep440

        files = set(self._list(self._path("index", name)))
        found = []
        for file in files:
            if file.startswith(".") or not file.endswith(".json") or file.endswith(".yank.json"):
                continue
            text = file[: -len(".json")]
            try:
                parsed = Pep440(text)
            except InvalidVersion:
                raise StoreDamaged(
                    f"store {self.url}: index/{name}/{file}: {text!r} is not a PEP 440 version"
                ) from None
            found.append(PublishedVersion(text, f"{text}.yank.json" in files, parsed))
        return sorted(found, key=lambda v: v.parsed)

    def entry(self, name: str, version: str) -> dict[str, Any] | None:
        """The index entry of `name` at `version` (exactly as published), checked; None if there is none."""
        path = self._path("index", name, f"{version}.json")
        data = self._read(path)
        if data is None:
            return None
        entry = self._json(path, data, "index entry")
        problems = []
        if entry.get("name") != name:
            problems.append(f"name {entry.get('name')!r} is not {name!r}")
        if str(entry.get("version")) != version:
            problems.append(f"version {entry.get('version')!r} is not {version!r}")
        if not is_sha256(entry.get("bundle_id")):
            problems.append("bundle_id is not a sha256")
        if problems:
            raise StoreDamaged(
                f"store {self.url}: index/{name}/{version}.json: malformed index entry: " + "; ".join(problems)
            )
        return entry

    def lock_of_version(self, name: str, version: str, bundle_id: str) -> dict[str, Any]:
        """The lock of the bundle the index names for `name` at `version`, checked against the id and against
        the index: a lock of another workflow or version is refused (the index was changed)."""
        lock = self.lock_of(bundle_id)
        if lock.get("workflow") != name or parse_version(str(lock.get("version"))) != parse_version(version):
            raise StoreDamaged(
                f"store {self.url}: index/{name}/{version}.json names bundle {bundle_id}, which is "
                f"{lock.get('workflow')} {lock.get('version')}: the index was altered"
            )
        return lock

    def published(self, name: str, version: str) -> tuple[str, dict[str, Any]] | None:
        """The entry published under a version equal to `version` (PEP 440: 1.0 == 1.0.0), with its spelling."""
        wanted = parse_version(version)
        for found in self.versions(name):
            if found.parsed == wanted:
                return found.version, self.entry(name, found.version)
        return None

    def require_published(self, name: str, version: str) -> tuple[str, dict[str, Any]]:
        """`published`, or a `NoMatch` listing the versions that are."""
        found = self.published(name, version)
        if found is None:
            listed = ", ".join(v.version for v in self.versions(name)) or "none"
            raise NoMatch(f"{name}@{version} is not published in {self.url} (published: {listed})")
        return found

    def add_entry(self, entry: dict[str, Any]) -> bool:
        """Publish an index entry, exclusively; False (nothing written) when an equal version was published or
        claimed first. Equal is PEP 440's (1.0 == 1.0.0), and the index names files by spelling, so a publisher
        first claims the version's canonical form (`index/NAME/.claims/`): of two spellings racing, one wins.
        A claim whose entry a killed publisher never wrote is completed by the next one to try."""
        name, version = check_name(entry["name"]), entry["version"]
        data = json.dumps(entry, indent=2).encode() + b"\n"
        claim = self._path("index", name, ".claims", f"{_version_key(version)}.json")
        if self._create(claim, data):
            path = self._path("index", name, f"{version}.json")
            # written by us, or from our claim by a publisher who found it first (the same bytes): ours
            return self._create(path, data) or self._read(path) == data
        if self.published(name, version) is None:  # claimed, never written: write what the claim holds
            claimed = self._json(claim, self._read(claim) or b"", "version claim")
            spelled = claimed.get("version")
            if claimed.get("name") != name or parse_version(str(spelled)) != parse_version(version):
                raise StoreDamaged(f"store {self.url}: {claim} claims another version ({spelled!r}): it was altered")
            self._create(self._path("index", name, f"{spelled}.json"), self._read(claim) or b"")
        return False

    def yank(self, name: str, version: str, yank: dict[str, Any]) -> bool:
        """Yank a version, exclusively; False when it was yanked before (nothing written)."""
        return self._create(
            self._path("index", name, f"{version}.yank.json"), json.dumps(yank, indent=2).encode() + b"\n"
        )

    def yank_of(self, name: str, version: str) -> dict[str, Any] | None:
        path = self._path("index", name, f"{version}.yank.json")
        data = self._read(path)
        return None if data is None else self._json(path, data, "yank")

    def resolve(self, name: str, spec: str = "") -> tuple[str, str]:
        """(version, bundle id) of the newest version of `name` matching `spec` that is not yanked (an exact
        `==` pin may name a yanked one). NoMatch lists what exists."""
        check_name(name)
        wanted = parse_spec(spec)
        versions = self.versions(name)
        if not versions:
            known = self.names()
            raise NoMatch(
                f"store {self.url} has no workflow {name!r}"
                + (f" (it has {', '.join(known)})" if known else " (it is empty)")
            )
        exact = pins_exactly(wanted)
        usable = matching_versions(wanted, [v for v in versions if exact or not v.yanked])
        if not usable:
            matching = matching_versions(wanted, versions)
            listed = ", ".join(v.version + (" (yanked)" if v.yanked else "") for v in versions)
            why = ""
            if matching:
                why = f": {', '.join(v.version for v in matching)} matched but {'is' if len(matching) == 1 else 'are'} yanked (pin it with =={matching[-1].version} to use it anyway)"
            raise NoMatch(f"{name}@{spec or '*'}: no version matches in store {self.url}{why}; published: {listed}")
        chosen = usable[-1].version
        entry = self.entry(name, chosen)
        return chosen, entry["bundle_id"]

    # ---- fetching a bundle ---------------------------------------------------

    def fetch(self, bundle_id: str, into: str | Path) -> Path:
        """Write a bundle's files into `into`, each re-hashed against its lock; the manifest's path.

        The files go to a temporary sibling folder first, renamed to `into` last: `into` holds the whole,
        checked bundle (and its lock, as `.lock.json`) or does not exist. If `into` exists (fetched before)
        its files are re-hashed instead."""
        lock = self.lock_of(bundle_id)
        into = Path(into)
        manifest = into / lock.get("manifest", "workflow.yaml")
        if into.exists():
            check_files(lock, into)
            return manifest
        into.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=into.parent, prefix=f"{TEMP_PREFIX}{bundle_id[:12]}-"))
        try:
            for key, file_digest in lock["files"].items():
                data = self.read_object(file_digest, f"file {key} of bundle {bundle_id[:12]}")
                target = tmp / key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            (tmp / LOCK_FILE).write_bytes(canonical_bytes(lock))
            (tmp / ".complete").write_text(bundle_id)
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a fetched bundle reads like any folder
            try:
                os.rename(tmp, into)
            except OSError:
                if not into.exists():
                    raise
                check_files(lock, into)  # another process fetched it meanwhile
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return manifest

    # ---- channels: promotion histories -----------------------------------------

    def channel_path(self, name: str, env: str) -> str:
        return self._path("channels", name, f"{env}.jsonl")

    def environments(self, name: str) -> list[str]:
        return [n[: -len(".jsonl")] for n in self._list(self._path("channels", name)) if n.endswith(".jsonl")]

    def channel(self, name: str, env: str) -> list[dict[str, Any]]:
        """The promotion history of `name` in `env`, oldest first; its hash chain checked (StoreDamaged
        names the file and the line). Entries claimed but not yet in the `.jsonl` are included."""
        check_name(env, "environment")
        path = self.channel_path(name, env)
        data = self._read(path) or b""
        where = f"store {self.url}: {self.where(path)}"
        history: list[dict[str, Any]] = []
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                raise StoreDamaged(f"{where}: line {number} is not JSON: the channel was altered") from None
            if not isinstance(entry, dict):
                raise StoreDamaged(f"{where}: line {number} is not a JSON object: the channel was altered")
            _check_link(entry, history, f"{where}: line {number}")
            history.append(entry)
        while True:  # entries claimed by a promoter that had not rewritten the .jsonl yet
            claim = self._read(self._claim_path(name, env, len(history) + 1))
            if claim is None:
                return history
            entry = self._json(self._claim_path(name, env, len(history) + 1), claim, "channel entry")
            _check_link(entry, history, f"{where}: entry {len(history) + 1}")
            history.append(entry)

    def _claim_path(self, name: str, env: str, seq: int) -> str:
        return self._path("channels", name, env, f"{seq:010d}.json")

    def append_channel(self, name: str, env: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Append a promotion to `name`'s channel in `env`: the next sequence number is claimed exclusively
        (a concurrent promoter takes the one after), then the `.jsonl` is rewritten whole."""
        for _ in range(50):
            history = self.channel(name, env)
            entry = {
                "seq": len(history) + 1,
                "time": store_time(),
                **fields,
                "prev_hash": history[-1]["hash"] if history else GENESIS,
            }
            entry["hash"] = entry_hash(entry)
            if not self._create(self._claim_path(name, env, entry["seq"]), canonical_bytes(entry)):
                continue  # someone promoted first: chain onto theirs
            lines = [json.dumps(e, sort_keys=True, ensure_ascii=False) for e in [*history, entry]]
            self._write(self.channel_path(name, env), ("\n".join(lines) + "\n").encode())
            return entry
        raise KitError(f"store {self.url}: channel {name}/{env} is too busy: try the promotion again")


def _version_key(version: str) -> str:
    """One name for all spellings of a version (PEP 440: 1, 1.0 and 1.0.0 are one)."""
    from packaging.utils import canonicalize_version

    return canonicalize_version(parse_version(version), strip_trailing_zero=True)


def _temporary_beside(path: str, data: bytes) -> str:
    """A finished, durable temporary file in `path`'s folder holding `data` (local stores rename or link it)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would keep a shared store from its other readers
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


@functools.cache
def _umask() -> int:
    """The process's umask, read once (reading it means setting it: not again while threads create files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_link(entry: dict[str, Any], history: list[dict[str, Any]], where: str) -> None:
    expected_seq = len(history) + 1
    prev = history[-1]["hash"] if history else GENESIS
    if entry.get("seq") != expected_seq:
        raise StoreDamaged(f"{where}: seq {entry.get('seq')!r}, expected {expected_seq}: the channel was altered")
    if entry.get("prev_hash") != prev:
        raise StoreDamaged(
            f"{where}: prev_hash {entry.get('prev_hash')} does not match the hash of the entry before it ({prev}): "
            "the channel was altered"
        )
    if not is_sha256(entry.get("bundle_id")) or not isinstance(entry.get("version", ""), str):
        raise StoreDamaged(
            f"{where}: bundle_id {entry.get('bundle_id')!r} or version {entry.get('version')!r} is malformed: "
            "the channel was altered"
        )
    actual = entry_hash(entry)
    if entry.get("hash") != actual:
        raise StoreDamaged(
            f"{where}: its content hashes to {actual}, not to the hash it records ({entry.get('hash')}): "
            "the channel was altered"
        )


def fetched_lock(root: Path, expected: str) -> dict[str, Any]:
    """The lock of bundle `expected` fetched into `root`, its files re-hashed against it (else StoreDamaged)."""
    from kit.bundles.lock import bundle_id

    path = Path(root) / LOCK_FILE
    try:
        lock = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreDamaged(f"{path}: cannot read the fetched bundle's lock ({exc}); delete {root} and fetch it again")
    if not isinstance(lock, dict) or not isinstance(lock.get("files"), dict) or lock.get("bundle_id") != expected:
        raise StoreDamaged(f"{path} is not the lock of bundle {expected}; delete {root} and fetch it again")
    actual = bundle_id(lock)
    if actual != expected:
        raise StoreDamaged(
            f"{path} does not match bundle {expected}: it hashes to {actual}; delete {root} and fetch it again"
        )
    check_files(lock, Path(root))
    return lock


def check_files(lock: dict[str, Any], root: Path) -> None:
    """Re-hash a fetched bundle's files against its lock; StoreDamaged naming the file and both digests."""
    for key, expected in lock["files"].items():
        path = root / key
        actual = sha256_file(path) if path.is_file() else None
        if actual != expected:
            raise StoreDamaged(
                f"{path} does not match bundle {lock['bundle_id'][:12]}'s lock: the lock says sha256:{expected}, "
                + ("the file is missing" if actual is None else f"the file hashes to sha256:{actual}")
                + f"; delete {root} and fetch it again"
            )


def live_at(history: list[dict[str, Any]], at) -> dict[str, Any] | None:
    """The entry of a channel's history that was live at `at` (naive UTC): the last promoted by then."""
    live = None
    for entry in history:
        try:
            when = parse_time(str(entry.get("time")))
        except ValueError:
            continue
        if when <= at:
            live = entry
    return live
