"""Requirement lists: normalising them (one build per distinct list) and checking a model's
requirements against what an environment has installed.

The rules follow PEP 508 (requirement syntax) and PEP 440 (version specifiers) through
`packaging`, the library pip itself uses; names compare after PEP 503 normalisation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from apps.core.errors import InvalidInput


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements.txt text: comments (`# …`, also trailing),
    blank lines and pip options (`-r`, `--index-url` …) dropped, whitespace trimmed."""
    lines = []
    for raw in (text or "").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#") or line.startswith("-"):
            continue
        lines.append(line)
    return lines


def normalise(text: str) -> tuple[str, str]:
    """(normalised list, sha256 hex of it) for a requirements list typed by a person.

    Each line must be a PEP 508 requirement (`cowsay==6.1`, `scikit-learn>=1.7,<1.8`);
    names (and extras, PEP 685) are PEP 503-normalised, lines sorted and de-duplicated, so
    lists that differ only in order, case or spacing share one build. Pip options and URLs are refused: a build
    installs from the package index only.
    Raises InvalidInput on the field `requirements`, naming the bad line."""
    cleaned: set[str] = set()
    for raw in (text or "").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise InvalidInput.field("requirements", f"“{line}”: pip options are not allowed; list packages only.")
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "invalid syntax"
            raise InvalidInput.field("requirements", f"“{line}” is not a requirement: {reason}") from None
        if req.url:
            raise InvalidInput.field("requirements", f"“{line}”: install from the package index, not a URL.")
        req.name = canonicalize_name(req.name)
        req.extras = {canonicalize_name(extra) for extra in req.extras}  # PEP 685: `[SOCKS]` is `[socks]`
        cleaned.add(str(req))
    body = "\n".join(sorted(cleaned))
    return body, hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    """One requirement of a model that an environment does not meet.

    kind: "missing" (not installed at all) or "conflict" (installed, wrong version).
    `found` is the installed version ("" when missing)."""

    name: str
    wanted: str
    found: str
    kind: str

    def __str__(self) -> str:
        if self.kind == "missing":
            return f"{self.name} ({self.wanted or 'any version'}) is not installed"
        return f"{self.name} {self.found} is installed, the model needs {self.wanted}"


def check(requirements: Iterable[str], installed: dict[str, str]) -> list[Problem]:
    """The requirements (PEP 508 lines, e.g. a model's requirements.txt from MLflow) that
    `installed` ({distribution name: version}) does not satisfy, in the given order.

    A requirement whose environment marker is false here is skipped; an unparsable line is
    skipped too (MLflow writes only valid ones). A version that is not PEP 440 counts as a
    conflict unless the specifier is empty."""
    have: dict[str, str] = {}
    for name, version in installed.items():
        have.setdefault(canonicalize_name(name), version)  # the first of a name wins, as for import
    problems: list[Problem] = []
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = canonicalize_name(req.name)
        wanted = str(req.specifier)
        found = have.get(name)
        if found is None:
            problems.append(Problem(name, wanted, "", "missing"))
            continue
        if not wanted:
            continue
        try:
            ok = req.specifier.contains(Version(found), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(Problem(name, wanted, found, "conflict"))
    return problems
