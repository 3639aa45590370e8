"""The secret scan of `kit verify`: no credential may ship inside a bundle (DESIGN section 12).

A published bundle is copied to every project that installs it, so a key pasted into a
notebook, a data file or a config leaks to all of them. Every file of the bundle is
scanned for:

- known key shapes: OpenAI (`sk-...`), AWS access key ids (`AKIA...`), GitHub
  (`ghp_...`, `github_pat_...`), Slack (`xox?-...`), Stripe live keys, Google API keys,
  `Bearer ...` tokens, and a quoted value assigned to a name like `api_key` or `password`;
- private-key blocks (`-----BEGIN ... PRIVATE KEY-----`);
- high-entropy tokens: long words of base64-like characters mixing upper and lower case
  and digits whose Shannon entropy is near that of random text. Pure hex words are left
  out: they are digests (locks, provenance, recordings) far more often than keys;
- the values of the environment variables that the model config's `api_key_env` and the
  notebooks' `kit.secret("NAME")` calls name, when they are set here (values shorter
  than 8 characters are not searched: they would match unrelated text).

Notebooks are scanned cell by cell (sources and text outputs; images are skipped) and a
finding names the cell and line; other files name the line. Binary files get the key
shapes and the environment values only. A finding never repeats the secret itself.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

SECRET_CALL = re.compile(r"""kit\.secret\(\s*(?:name\s*=\s*)?["']([^"']+)["']""")
MIN_ENV_VALUE = 8

KEY_SHAPES: list[tuple[str, re.Pattern[str]]] = [
    ("a private key block", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("an OpenAI API key (sk-...)", re.compile(r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_\-]{20,}")),
    ("an AWS access key id (AKIA...)", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b")),
    ("a GitHub token (ghp_...)", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})")),
    ("a Slack token (xox.-...)", re.compile(r"\bxox[abposre]-[A-Za-z0-9\-]{10,}")),
    ("a Stripe live key", re.compile(r"\b[rs]k_live_[A-Za-z0-9]{20,}")),
    ("a Google API key (AIza...)", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}")),
    ("a bearer token", re.compile(r"\b[Bb]earer\s+[A-Za-z0-9\-._~+/]{20,}=*")),
]
ASSIGNED = re.compile(
    r"""(?i)\b([\w.\-]*(?:api[_\-]?key|secret|token|passw(?:or)?d|access[_\-]?key|credential)[\w.\-]*)["']?"""
    r"""\s*[:=]\s*["']([^"'\s]{12,})["']"""
)
NAMES_A_NAME = ("env", "name", "names", "file", "path", "var", "id", "type", "kind", "url")
TOKEN = re.compile(r"[A-Za-z0-9+/_\-]{24,}={0,2}")
HEX = re.compile(r"[0-9a-fA-F]+")
WORDS = re.compile(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}")
URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://\S+")
ENTROPY_RATIO = 0.8  # of the most a word of that length can have (log2 of its length, at most 6 for base64)
MIN_ENTROPY = 4.0
BINARY_MIME = ("image/", "application/pdf", "application/vnd.")


@dataclass(frozen=True)
class Finding:
    path: str  # the file, relative to the bundle's folder
    where: str  # "line 4", "cell 3, line 2", "byte 1234"
    kind: str  # what was found, never the secret itself

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.kind}"


def shannon_entropy(word: str) -> float:
    """Bits per character of `word`'s own character distribution."""
    counts = Counter(word)
    return -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())


def looks_random(word: str) -> bool:
    """A base64-like word mixing cases and digits whose entropy is near that of random text of its length."""
    word = word.rstrip("=")
    if len(word) < 24 or HEX.fullmatch(word):
        return False
    if not (any(c.isupper() for c in word) and any(c.islower() for c in word) and any(c.isdigit() for c in word)):
        return False
    if sum(len(w) for w in WORDS.findall(word)) >= 0.5 * len(word):
        return False  # mostly words: an identifier, a path, CamelCase
    if sum(ord(b) - ord(a) == 1 for a, b in zip(word, word[1:])) >= 0.5 * len(word):
        return False  # an alphabet: abcdef...XYZ0123...
    ceiling = min(math.log2(len(word)), 6.0)
    entropy = shannon_entropy(word)
    return entropy >= MIN_ENTROPY and entropy >= ENTROPY_RATIO * ceiling


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    return (
        "redacted" in lowered
        or value.startswith(("$", "<", "{", "%"))
        or len(set(value)) <= 3
        or any(w in lowered for w in ("example", "changeme", "placeholder", "your_", "your-", "xxxx"))
    )


def scan_text(text: str, env_values: dict[str, str]) -> Iterator[tuple[int, str]]:
    """(line number, what) for every suspicious thing in `text`, lines counted from 1."""
    for number, line in enumerate(text.splitlines(), start=1):
        yield from ((number, kind) for kind in scan_line(line, env_values))


def scan_line(line: str, env_values: dict[str, str]) -> Iterator[str]:
    found = False
    for kind, pattern in KEY_SHAPES:
        if pattern.search(line):
            found = True
            yield kind
    for name, value in env_values.items():
        if value in line:
            found = True
            yield f"the value of ${name}"
    if found:
        return  # one line, one finding of each shape: the entropy of the same key adds nothing
    for match in ASSIGNED.finditer(line):
        name, value = match.group(1).lower(), match.group(2)
        if name.rsplit("_", 1)[-1] in NAMES_A_NAME or _is_placeholder(value):
            continue  # `api_key_env: OPENAI_API_KEY` names where a key is, it is none
        if any(c.isdigit() for c in value) and any(c.isalpha() for c in value) and shannon_entropy(value) >= 3.0:
            yield "a hard-coded credential (a quoted value assigned to a secret-like name)"
            return
    for match in TOKEN.finditer(URL.sub(" ", line)):  # a URL's path is words and ids, not keys
        if looks_random(match.group(0)):
            yield f"a high-entropy token ({len(match.group(0))} characters)"
            return


def _notebook_texts(nb: dict) -> Iterator[tuple[str, str]]:
    """(where, text) of each cell's source and text outputs; images and other binary outputs are skipped."""
    for index, cell in enumerate(nb.get("cells") or [], start=1):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        yield f"cell {index}", "".join(source) if isinstance(source, list) else str(source)
        for output in cell.get("outputs") or []:
            if not isinstance(output, dict):
                continue
            texts = [output.get("text")] if "text" in output else []
            texts += [output.get("traceback")] if "traceback" in output else []
            for mime, data in (output.get("data") or {}).items():
                if not mime.startswith(BINARY_MIME):
                    texts.append(data)
            for text in texts:
                if isinstance(text, list):
                    text = "".join(t if isinstance(t, str) else json.dumps(t) for t in text)
                elif not isinstance(text, str):
                    text = json.dumps(text)
                yield f"cell {index} output", text


def scan_file(root: Path, name: str, env_values: dict[str, str]) -> list[Finding]:
    """Findings in one bundle file (`name` relative to `root`)."""
    data = (root / name).read_bytes()
    findings: list[Finding] = []
    if name.endswith(".ipynb"):
        try:
            nb = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            nb = None
        if isinstance(nb, dict):
            for where, text in _notebook_texts(nb):
                findings += [Finding(name, f"{where}, line {n}", kind) for n, kind in scan_text(text, env_values)]
            return _once(findings)
    if b"\0" in data[:8192]:  # binary: key shapes and environment values only, by byte offset
        text = data.decode("latin-1")
        for kind, pattern in KEY_SHAPES:
            for match in pattern.finditer(text):
                findings.append(Finding(name, f"byte {match.start()}", kind))
        for var, value in env_values.items():
            offset = data.find(value.encode("utf-8"))
            if offset >= 0:
                findings.append(Finding(name, f"byte {offset}", f"the value of ${var}"))
        return _once(findings)
    text = data.decode("utf-8", errors="replace")
    return _once([Finding(name, f"line {n}", kind) for n, kind in scan_text(text, env_values)])


def _once(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


def secret_names(notebooks: Iterable[Path], model_configs: Iterable[dict]) -> list[str]:
    """The environment variables holding secrets: `api_key_env` of each model config, `kit.secret` names."""
    names = {str(c["api_key_env"]) for c in model_configs if isinstance(c, dict) and c.get("api_key_env")}
    for path in notebooks:
        try:
            nb = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        for cell in nb.get("cells") or []:
            if isinstance(cell, dict) and cell.get("cell_type") == "code":
                source = cell.get("source", "")
                names.update(SECRET_CALL.findall("".join(source) if isinstance(source, list) else str(source)))
    return sorted(names)


def scan_bundle(root: Path, files: Iterable[str], env_names: Iterable[str]) -> list[Finding]:
    """Every finding in the bundle's `files` (paths relative to `root`), in file order."""
    env_values = {name: os.environ[name] for name in env_names if len(os.environ.get(name) or "") >= MIN_ENV_VALUE}
    findings: list[Finding] = []
    for name in files:
        findings += scan_file(root, name, env_values)
    return findings
