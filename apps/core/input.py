"""Input no part of Plinth can take, refused before any view runs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

MESSAGE = "Contains a NUL character."


class NulCharacterMiddleware:
    """A NUL character (%00) in the path or in a query parameter is a 400, pages and API
    alike. No name, slug, id or filter of Plinth contains one, and PostgreSQL refuses NUL
    in any text it compares ("A string literal cannot contain NUL (0x00) characters"), so
    it would reach the database as a 500. Bodies are checked by their forms and serializers
    (Django's and DRF's CharField refuse NUL). The answer names the parameter (`path` for
    the path): {"detail": ..., name: [message]} under /api/, the error page elsewhere."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        field = self._offending(request)
        if field is None:
            return self.get_response(request)
        message = f"{field}: {MESSAGE}"
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": message, field: [MESSAGE]}, status=400)
        return render(request, "error.html", {"message": message, "status": 400}, status=400)

    @staticmethod
    def _offending(request: HttpRequest) -> str | None:
        if "\x00" in request.path:
            return "path"
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                return name.replace("\x00", "") or "query"
        return None
