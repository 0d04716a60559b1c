"""`|when` shows a point in time in the viewer's zone with the zone named — also for the ISO
strings JSON fields store (a promotion's evidence), and never raises on other text."""

from __future__ import annotations

from datetime import UTC, datetime

from django.template import Context, Template
from django.utils import timezone


def render(value: object) -> str:
    return Template('{{ value|when:"Y-m-d H:i:s" }}').render(Context({"value": value}))


def test_an_iso_string_is_shown_like_the_datetime_it_names() -> None:
    moment = datetime(2026, 12, 6, 12, 57, 38, tzinfo=UTC)
    with timezone.override("Europe/Berlin"):
        assert render(moment.isoformat()) == render(moment)
        assert "2026-12-06 13:57:38 CET" in render(moment.isoformat())


def test_other_text_is_shown_escaped_as_it_is() -> None:
    assert render("<b>soon</b>") == "&lt;b&gt;soon&lt;/b&gt;"
    assert render("") == ""
