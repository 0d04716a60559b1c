"""The time zone pages show times in: the person's own setting (account page), else the
browser's zone (a cookie that static/plinth/timezone.js sets from
`Intl.DateTimeFormat().resolvedOptions().timeZone`), else the server's TIME_ZONE. Every
value is checked against the IANA database (`zoneinfo.available_timezones()`); anything
else is ignored. The API is not affected: it answers ISO 8601 with an offset."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from functools import lru_cache

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

COOKIE = "plinth_tz"
API_PREFIX = "/api/"


@lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def valid_zone(name: object) -> str:
    """`name` when it is an IANA zone name known to this server (e.g. "Europe/Paris",
    "UTC"), else ""."""
    if not isinstance(name, str) or not name or len(name) > 64:
        return ""
    return name if name in _known() else ""


def zone_choices() -> list[tuple[str, str]]:
    """Every known zone, sorted, as form choices; the empty choice means the browser's."""
    return [("", "The browser's time zone"), *((z, z) for z in sorted(_known()))]


def zone_for(request: HttpRequest) -> str:
    """The zone `request` is shown in: the user's setting, else the cookie, else ""
    (the server's TIME_ZONE)."""
    user = getattr(request, "user", None)
    own = valid_zone(getattr(user, "time_zone", "")) if user is not None and user.is_authenticated else ""
    return own or valid_zone(request.COOKIES.get(COOKIE, ""))


class TimezoneMiddleware:
    """Activates the request's time zone (see `zone_for`) for pages and forms, never for
    the API (under API_PREFIX); after AuthenticationMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # The API answers the same to everyone: ISO 8601 in the server's zone, with offset.
        zone = "" if request.path.startswith(API_PREFIX) else zone_for(request)
        if zone:
            timezone.activate(zoneinfo.ZoneInfo(zone))
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
