"""Policy: who may do what (entitlements, approvals) and what must never be kept (redaction).

Principals and roles live in `kit.yaml` (DESIGN section 11):

    principals: {alice: [analyst], bob: [reviewer]}
    roles: {analyst: [cases:read, llm:use], reviewer: [cases:read]}
    approvals: {self_approve: false}

Deny by default: an unknown principal has no roles, a role grants only what it lists.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kit.errors import InvalidInput, PermissionDenied

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4  # shorter values would be "redacted" all over unrelated text


@dataclass
class AccessPolicy:
    principals: dict[str, list[str]] = field(default_factory=dict)
    roles: dict[str, list[str]] = field(default_factory=dict)
    self_approve: bool = False

    @classmethod
    def from_settings(cls, settings: dict[str, Any], where: str = "kit.yaml") -> AccessPolicy:
        principals = settings.get("principals") or {}
        roles = settings.get("roles") or {}
        approvals = settings.get("approvals") or {}
        for name, value in (("principals", principals), ("roles", roles), ("approvals", approvals)):
            if not isinstance(value, dict):
                raise InvalidInput(f"{where}: {name}: expected a mapping, found {type(value).__name__}")
        for label, mapping in (("principals", principals), ("roles", roles)):
            for key, items in mapping.items():
                if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                    raise InvalidInput(f"{where}: {label}.{key}: expected a list of names, found {items!r}")
        return cls(principals=principals, roles=roles, self_approve=bool(approvals.get("self_approve", False)))

    def roles_of(self, principal: str) -> set[str]:
        return set(self.principals.get(principal, []))

    def holders_of(self, role: str) -> list[str]:
        """The principals that hold `role`."""
        return sorted(p for p, roles in self.principals.items() if role in roles)

    def entitlements_of(self, principal: str) -> set[str]:
        granted: set[str] = set()
        for role in self.roles_of(principal):
            granted.update(self.roles.get(role, []))
        return granted

    def missing(self, principal: str, requires: Iterable[str]) -> list[str]:
        granted = self.entitlements_of(principal)
        return [r for r in requires if r not in granted]

    def check_approver(self, principal: str, approvers: Iterable[str], starter: str | None) -> None:
        approvers = list(approvers)
        if not self.roles_of(principal) & set(approvers):
            held = ", ".join(sorted(self.roles_of(principal))) or "none"
            raise PermissionDenied(
                f"{principal!r} may not decide this approval: it needs one of the roles "
                f"{', '.join(approvers)}; {principal!r} holds {held}"
            )
        if starter is not None and principal == starter and not self.self_approve:
            raise PermissionDenied(
                f"{principal!r} started this run and may not approve it "
                "(kit.yaml: approvals: {self_approve: true} would allow it)"
            )


class Redactor:
    """Replaces secrets by [REDACTED]: values of names matching `policy.redact`, and kit.secret values."""

    def __init__(self, patterns: Iterable[str] = (), secrets: Iterable[str] = ()):
        self.patterns = [p.lower() for p in patterns]
        self.secrets: set[str] = set()
        self.add_secrets(secrets)

    def add_secrets(self, values: Iterable[Any]) -> None:
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                self.secrets.add(value)
            elif (
                isinstance(value, (int, float)) and not isinstance(value, bool) and len(str(value)) >= MIN_SECRET_LENGTH
            ):
                self.secrets.add(str(value))

    def add_secret_names(self, names: Iterable[str]) -> None:
        """Secrets read through kit.secret: their values come from this process's environment."""
        self.add_secrets(os.environ.get(n) for n in names)

    def matches(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, p) for p in self.patterns)

    @property
    def active(self) -> bool:
        return bool(self.secrets or self.patterns)

    def _forms(self) -> list[tuple[str, str]]:
        """Each secret as written plainly and as it appears inside JSON or repr text."""
        forms = []
        for secret in sorted(self.secrets, key=len, reverse=True):
            forms.append((secret, REDACTED))
            escaped = json.dumps(secret)[1:-1]
            if escaped != secret:
                forms.append((escaped, REDACTED))
            represented = repr(secret)[1:-1]
            if represented not in (secret, escaped):
                forms.append((represented, REDACTED))
        return forms

    def text(self, value: str | None) -> str | None:
        if not value or not self.secrets:
            return value
        for secret, replacement in self._forms():
            value = value.replace(secret, replacement)
        return value

    def value(self, value: Any) -> Any:
        """A JSON value with secrets replaced, and values under matching keys redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):  # a secret may be a key too (a DataFrame's column, say)
            return {
                (self.text(k) if isinstance(k, str) else k): (REDACTED if self.matches(str(k)) else self.value(v))
                for k, v in value.items()
            }
        if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in self.secrets:
            return REDACTED
        return value

    def named(self, values: dict[str, Any]) -> dict[str, Any]:
        """Parameters or outputs by name: a matching name hides its value entirely."""
        return {k: (REDACTED if self.matches(k) else self.value(v)) for k, v in values.items()}

    def secret_values_of(self, values: dict[str, Any]) -> list[Any]:
        """Values whose names match the patterns: they are secrets wherever they reappear."""
        found = []
        for k, v in values.items():
            if self.matches(k):
                found.extend(_leaves(v))
        return found


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """Seconds in `90s`, `30m`, `12h`, `3d`, `1w` (or a plain number of seconds)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = str(text).strip().lower()
    if value and value[-1] in _UNITS:
        number, unit = value[:-1], _UNITS[value[-1]]
    else:
        number, unit = value, 1
    try:
        seconds = float(number) * unit
    except ValueError:
        raise ValueError(f"expected a duration like 90s, 30m, 12h or 3d, found {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, found {text!r}")
    return seconds


def principal_problem(name: Any) -> str | None:
    """Why `name` cannot be a principal (empty, control characters, spaces at its ends, too long), or None."""
    if not isinstance(name, str) or not name:
        return "a principal's name cannot be empty"
    if any(ch < " " or ch == "\x7f" for ch in name):
        return f"a principal's name cannot hold control characters or line breaks: {name!r}"
    if name != name.strip():
        return f"a principal's name cannot start or end with spaces: {name!r}"
    if len(name) > 200:
        return "a principal's name cannot be longer than 200 characters"
    return None


def resolve_principal(as_: str | None) -> str:
    """Who acts: `--as`, then ``KIT_PRINCIPAL``, then the OS user; a malformed name is refused (exit 2)."""
    import getpass

    if as_ is not None:
        name, where = as_, "--as"
    elif os.environ.get("KIT_PRINCIPAL") is not None:
        name, where = os.environ["KIT_PRINCIPAL"], "KIT_PRINCIPAL"
    else:
        name, where = getpass.getuser(), "the OS user"
    problem = principal_problem(name)
    if problem:
        raise InvalidInput(f"{where}: {problem}")
    return name
