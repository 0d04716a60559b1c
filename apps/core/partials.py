"""htmx fragments, one way for every page.

A fragment is a `{% partialdef <name> %}` block of the page's own template whose outermost
element has `id="<name>"`. htmx sends that id as `HX-Target` when it swaps the element (a
poll on the element itself, or a form with `hx-target="#<name>"`), so the view renders
`"<page>.html#<name>"` for an htmx request whose target is one of the page's fragments and
the whole page otherwise. A live fragment answers `HttpResponseStopPolling` (286) once the
thing it shows is finished: htmx swaps that last fragment and stops polling.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django_htmx.http import HttpResponseStopPolling


def fragment_for(request: HttpRequest, fragments: Iterable[str]) -> str | None:
    """The fragment an htmx request asks for (its `HX-Target`), if the page has it."""
    htmx = getattr(request, "htmx", None)
    if not htmx or not htmx.target:
        return None
    return htmx.target if htmx.target in set(fragments) else None


def stop_polling(response: HttpResponse) -> HttpResponse:
    """The same response with status 286: htmx swaps it and stops polling."""
    response.status_code = HttpResponseStopPolling.status_code
    response.reason_phrase = "Stop Polling"  # as django-htmx's HttpResponseStopPolling says it
    return response


def render_fragment(
    request: HttpRequest,
    template_name: str,
    fragment: str,
    context: dict[str, Any],
    *,
    finished: bool = False,
    status: int = 200,
) -> HttpResponse:
    """`template_name#fragment` alone; with `finished`, as the last answer to a poll (286)."""
    response = render(request, f"{template_name}#{fragment}", context, status=status)
    vary(response)
    return stop_polling(response) if finished else response


def vary(response: HttpResponse) -> HttpResponse:
    """A page and its fragments share a URL: caches (the browser's back button included)
    must keep them apart."""
    patch_vary_headers(response, ("HX-Request", "HX-Target"))
    return response


class FragmentMixin:
    """For template views: an htmx request targeting one of `fragments` gets that partial
    of `template_name` alone, as the last poll (286) when `finished()` says so."""

    fragments: tuple[str, ...] = ()
    request: HttpRequest
    template_name: str

    def finished(self) -> bool:
        """Whether what the page shows can no longer change (polling stops)."""
        return False

    def render_to_response(self, context: dict[str, Any], **response_kwargs: Any) -> HttpResponse:
        fragment = fragment_for(self.request, self.fragments)
        if fragment is not None:
            return render_fragment(self.request, self.template_name, fragment, context, finished=self.finished())
        response: HttpResponse = super().render_to_response(context, **response_kwargs)  # type: ignore[misc]
        return vary(response)
