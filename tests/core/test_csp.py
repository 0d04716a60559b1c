"""The site sends a strict Content-Security-Policy on every response (pages, fragments,
errors, the API, its docs), and no template carries what that policy would block: an
inline <script> or an inline event handler (on*= attribute). tests/e2e/test_csp.py opens
the chart pages in Chromium under the policy."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.test import Client

from apps.accounts.models import User
from tests.conftest import api_for, client_for

pytestmark = pytest.mark.django_db


def directives(header: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


def assert_strict(response: object) -> None:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    policy = directives(header)
    assert policy["script-src"] == ["'self'"], header
    assert "'unsafe-eval'" not in header and "'unsafe-inline'" not in policy["script-src"], header
    assert policy["object-src"] == ["'none'"] and policy["base-uri"] == ["'self'"], header
    assert policy["frame-ancestors"] == ["'none'"] and policy["img-src"] == ["'self'", "data:"], header


def test_every_kind_of_response_carries_the_policy(vic: User) -> None:
    responses = [
        Client().get("/login/"),  # a page, signed out
        Client().get("/"),  # a redirect to sign in
        client_for(vic).get("/"),  # a page, signed in
        client_for(vic).get("/no-such-page/"),  # an error page
        client_for(vic).get("/runs/compare/", {"run_ids": "a" * 32}, HTTP_HX_REQUEST="true"),  # htmx
        api_for(vic).get("/api/v1/me/"),  # the API
        Client().get("/healthz"),  # a probe
    ]
    assert [r.status_code >= 500 for r in responses] == [False] * len(responses)
    for response in responses:
        assert_strict(response)


def test_the_api_docs_load_their_start_up_code_as_a_script_of_their_own(vic: User) -> None:
    response = client_for(vic).get("/api/v1/docs/")
    assert response.status_code == 200
    assert_strict(response)
    parser = _Scripts()
    parser.feed(response.content.decode())
    assert parser.inline == [] and any("script" in src for src in parser.sources), parser.sources
    script = client_for(vic).get(next(src for src in parser.sources if "script" in src))
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


class _Scripts(HTMLParser):
    """Inline scripts (no src, not JSON data) and event-handler attributes of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.handlers += [f"<{tag} {name}=...>" for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            if names.get("src"):
                self.sources.append(str(names["src"]))
            elif names.get("type") != "application/json":
                self.inline.append(f"line {self.getpos()[0]}")


def template_files() -> list[Path]:
    roots = [Path(d) for d in settings.TEMPLATES[0]["DIRS"]]  # type: ignore[attr-defined]
    roots += [Path(config.path) / "templates" for config in apps.get_app_configs() if config.name.startswith("apps.")]
    return sorted(path for root in roots if root.exists() for path in root.rglob("*.html"))


def test_no_template_has_an_inline_script_or_event_handler() -> None:
    files = template_files()
    assert len(files) > 40  # the walk found the templates
    found: list[str] = []
    for path in files:
        parser = _Scripts()
        parser.feed(path.read_text())
        found += [f"{path.name}: inline script at {where}" for where in parser.inline]
        found += [f"{path.name}: {handler}" for handler in parser.handlers]
    assert found == []


def test_the_template_check_finds_what_it_looks_for() -> None:
    parser = _Scripts()
    parser.feed(
        '<form onsubmit="return confirm(1)"><script>alert(1)</script><script type="application/json">{}</script>'
    )
    assert parser.inline == ["line 1"] and parser.handlers == ["<form onsubmit=...>"]


def test_a_chart_without_points_is_a_sentence_and_one_with_points_a_container() -> None:
    from django.template.loader import render_to_string

    empty = {"data": [{"type": "scatter", "x": [], "y": []}], "layout": {}}
    drawn = {"data": [{"type": "bar", "x": ["a"], "y": [1]}], "layout": {}}
    nothing = render_to_string("core/_chart.html", {"chart_id": "c", "figure": empty, "empty": "Nothing yet."})
    assert "Nothing yet." in nothing and "data-chart" not in nothing and "<script" not in nothing
    something = render_to_string("core/_chart.html", {"chart_id": "c", "figure": drawn})
    assert 'data-chart="c-data"' in something and '<script id="c-data" type="application/json">' in something
