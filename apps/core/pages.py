"""Helpers for page views: run a service and turn its errors into form errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.core.paginator import Page, Paginator
from django.http import HttpRequest

from apps.core.errors import ServiceError

T = TypeVar("T")


def run_service(form: forms.Form, call: Callable[[], T]) -> tuple[T | None, int]:
    """Call a service; on a ServiceError attach its messages to `form` (per field where the
    form has that field) and return the status code to render with (400/403/409/503)."""
    try:
        return call(), 200
    except ServiceError as exc:
        placed = False
        for field, messages in exc.fields.items():
            if field in form.fields:
                for message in messages:
                    form.add_error(field, message)
                placed = True
        if not placed:
            form.add_error(None, exc.message)
        return None, exc.status_code


def paginate(request: HttpRequest, items: Any, per_page: int = 25) -> Page:  # type: ignore[type-arg]
    paginator = Paginator(items, per_page)
    return paginator.get_page(request.GET.get("page"))
