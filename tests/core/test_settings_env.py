"""Every `PLINTH_*` variable the README or the deploy manifests document is read: setting it
changes a setting when portal.settings is imported afresh, or it is on the short, tested list
of variables read elsewhere. A documented variable nothing reads fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A full name; `PLINTH_OIDC_*` (a wildcard) is not one.
NAME = re.compile(r"\bPLINTH_[A-Z0-9_]+\b(?!\*)")
# `PLINTH_X` / `_Y` shorthand would hide a name from this check; `_FILE` (the secret-file
# suffix every env_secret variable accepts) is the one suffix allowed.
SHORTHAND = re.compile(r"`_(?!FILE`)[A-Z0-9_]+`")

# Tried in order until the settings differ (the first value some variables refuse: a web
# timeout too short for MLflow's, a bool already on).
CANDIDATES = ["600", "1", "0", "redis://sentinel.invalid:6379/9", "production"]

# Read only by a subprocess that imports settings with `env` and `name=value` for each value;
# prints {name: the first value that changed a setting, or null}.
PROBE = r"""
import importlib, json, os, sys
names, candidates = json.loads(sys.argv[1]), json.loads(sys.argv[2])
base = dict(os.environ)

def snapshot(env):
    os.environ.clear()
    os.environ.update(env)
    sys.modules.pop("portal.settings", None)
    module = importlib.import_module("portal.settings")
    return {k: repr(v) for k, v in vars(module).items() if k.isupper()}

baseline = snapshot(base)
found = {}
for name in names:
    found[name] = None
    for value in candidates:
        try:
            changed = snapshot({**base, name: value}) != baseline
        except Exception:
            continue
        if changed:
            found[name] = value
            break
print(json.dumps(found))
"""


def documented_names() -> set[str]:
    sources = [ROOT / "README.md", *sorted((ROOT / "deploy").glob("*.yaml"))]
    return {name for path in sources for name in NAME.findall(path.read_text(encoding="utf-8"))} - {
        # `_FILE` variants are covered by their variable (env_secret reads both).
        n
        for path in sources
        for n in NAME.findall(path.read_text(encoding="utf-8"))
        if n.endswith("_FILE")
    }


def read_by_settings(names: list[str], tmp_path: Path) -> dict[str, str | None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLINTH_") and k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(ROOT), PLINTH_DATA_DIR=str(tmp_path / "data"))
    # cwd: relative sentinel paths (a data or static dir of "600") land in the test's folder.
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(names), json.dumps(CANDIDATES)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _port_default(monkeypatch: pytest.MonkeyPatch) -> int:
    from apps.core.management.commands.embedded import Command

    monkeypatch.setenv("PLINTH_PORT", "8765")
    return int(Command().create_parser("manage.py", "embedded").parse_args([]).port)


def _browser_required(monkeypatch: pytest.MonkeyPatch) -> bool:
    from tests.e2e.conftest import _browser_required as required

    monkeypatch.setenv("PLINTH_REQUIRE_BROWSER", "1")
    return required()


def _postgres_required(monkeypatch: pytest.MonkeyPatch) -> bool:
    from tests.conftest import postgres_required

    monkeypatch.setenv("PLINTH_REQUIRE_POSTGRES", "1")
    return postgres_required()


# Variables read outside Django settings, each with a check that the reader sees it.
READ_ELSEWHERE = {
    # `make run` / `manage.py embedded`: the web server's port.
    "PLINTH_PORT": lambda mp: _port_default(mp) == 8765,
    # The browser tests' conftest: a missing Chromium fails instead of skipping (CI).
    "PLINTH_REQUIRE_BROWSER": lambda mp: _browser_required(mp) is True,
    # The suite's conftest: a test that needs PostgreSQL fails instead of skipping (CI).
    "PLINTH_REQUIRE_POSTGRES": lambda mp: _postgres_required(mp) is True,
}


def test_the_docs_spell_every_variable_in_full() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "deploy").glob("*.yaml"))]:
        text = path.read_text(encoding="utf-8")
        assert not SHORTHAND.findall(text), f"{path.name}: write each PLINTH_ name in full"


def test_every_documented_variable_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    documented = documented_names()
    assert len(documented) > 30  # the README's table was found
    for name, check in READ_ELSEWHERE.items():
        assert check(monkeypatch), f"{name} is documented but its reader ignores it"
    names = sorted(documented - set(READ_ELSEWHERE))
    # One name nobody reads proves the probe can tell.
    found = read_by_settings([*names, "PLINTH_NOT_A_SETTING"], tmp_path)
    assert found.pop("PLINTH_NOT_A_SETTING") is None
    unread = sorted(name for name, value in found.items() if value is None)
    assert not unread, f"documented but read by no setting: {unread}"
