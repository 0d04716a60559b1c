"""portal/settings.py is the one source of every setting's default: no module reads a setting
with `getattr(settings, NAME, default)` (a second default that drifts from the first), and every
`settings.PLINTH_*` the code reads is defined there. The sources are parsed (ast), not grepped."""

from __future__ import annotations

import ast
from pathlib import Path

from portal import settings as portal_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("apps", "portal")


def settings_names(tree: ast.Module) -> set[str]:
    """Names bound to `django.conf.settings` in a module (`from django.conf import settings [as x]`)."""
    return {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "django.conf"
        for alias in node.names
        if alias.name == "settings"
    }


def is_settings(node: ast.expr, names: set[str]) -> bool:
    """Whether `node` is a bound settings name or the dotted `django.conf.settings`."""
    if isinstance(node, ast.Name):
        return node.id in names
    return ast.unparse(node) == "django.conf.settings"


def defaulted_reads(source: str) -> list[tuple[int, str]]:
    """`(line, call)` of each `getattr(settings, <name>, <default>)` in `source`."""
    tree = ast.parse(source)
    names = settings_names(tree)
    return [
        (node.lineno, ast.unparse(node))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "getattr"
        and (len(node.args) == 3 or any(k.arg == "default" for k in node.keywords))
        and node.args
        and is_settings(node.args[0], names)
    ]


def plinth_reads(source: str) -> set[str]:
    """`PLINTH_*` names read as `settings.PLINTH_X` (or through an alias of settings) in `source`."""
    tree = ast.parse(source)
    names = settings_names(tree)
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("PLINTH_") and is_settings(node.value, names)
    }


def sources() -> list[Path]:
    files = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50  # the packages were found
    return files


def test_the_detector_finds_defaulted_reads() -> None:
    source = (
        "from django.conf import settings\n"
        "from django.conf import settings as conf\n"
        "import django.conf\n"
        "a = getattr(settings, 'PLINTH_X', 1)\n"
        "b = getattr(conf, 'PLINTH_Y', '')\n"
        "c = getattr(django.conf.settings, 'PLINTH_Z', None)\n"
        "d = getattr(settings, 'PLINTH_W')\n"
        "e = getattr(other, 'PLINTH_V', 1)\n"
    )
    assert [line for line, _ in defaulted_reads(source)] == [4, 5, 6]
    assert plinth_reads(source + "f = conf.PLINTH_U + other.PLINTH_T\n") == {"PLINTH_U"}


def test_no_setting_is_read_with_a_second_default() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {call}"
        for path in sources()
        for line, call in defaulted_reads(path.read_text(encoding="utf-8"))
    ]
    assert not found, "read settings.NAME; its default belongs in portal/settings.py:\n" + "\n".join(found)


def test_every_plinth_setting_read_is_defined() -> None:
    read = {name for path in sources() for name in plinth_reads(path.read_text(encoding="utf-8"))}
    assert len(read) > 20  # the reads were found
    undefined = sorted(name for name in read if not hasattr(portal_settings, name))
    assert not undefined, f"read but not defined in portal/settings.py: {undefined}"
