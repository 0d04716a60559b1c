"""API plumbing shared by every app: pagination, error mapping, the scoped base viewset."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import DataError
from django.http import Http404
from rest_framework import exceptions, pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from apps.core.errors import InvalidInput, ServiceError

logger = logging.getLogger(__name__)


# The largest id a row can have (BigAutoField, a signed 64-bit integer).
MAX_ID = 2**63 - 1


def int_param(
    params: Any, name: str, default: int, *, minimum: int, maximum: int, label: str = "a whole number"
) -> int:
    """Query parameter `name` as an int in [minimum, maximum]; `default` when absent or
    empty. Anything else (not a number, out of range) is a 400 naming the parameter,
    never a silent clamp: the caller asked for something else than it would get."""
    raw = params.get(name, "")
    if raw is None or str(raw).strip() == "":
        return default
    text = str(raw).strip()
    # int() also takes "1_000", " 7" and non-ASCII digits; a query parameter is plain digits.
    if not re.fullmatch(r"-?[0-9]{1,19}", text):
        raise InvalidInput.field(name, f"{name} must be {label} between {minimum} and {maximum}.")
    value = int(text)
    if not minimum <= value <= maximum:
        raise InvalidInput.field(name, f"{name} must be between {minimum} and {maximum}.")
    return value


def int_schema(minimum: int, maximum: int) -> dict[str, Any]:
    """The OpenAPI schema of an integer parameter read with `int_param(minimum, maximum)`,
    for `OpenApiParameter(name, int_schema(1, 10))` (drf-spectacular takes a raw schema)."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


class Pagination(pagination.PageNumberPagination):
    """Page-number pagination of every API list: `page` (1.., default 1) and `page_size`
    (1..500, default 50). A `page` or `page_size` that is not a whole number in range is a
    400 naming the parameter (DRF alone answers 404 "Invalid page." or silently falls back
    to the default size); a `page` past the last page stays DRF's 404 "Invalid page.", so
    a client walking pages with `next` never sees it."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    max_page = 2**31 - 1

    def get_page_size(self, request: Any) -> int:
        return int_param(
            request.query_params, self.page_size_query_param, self.page_size, minimum=1, maximum=self.max_page_size
        )

    def get_page_number(self, request: Any, paginator: Any) -> int:
        if request.query_params.get(self.page_query_param, "") in self.last_page_strings:
            return int(paginator.num_pages)
        return int_param(request.query_params, self.page_query_param, 1, minimum=1, maximum=self.max_page)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page)
                parameter["description"] = "A page number (1..); past the last page: 404."
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
                parameter["description"] = f"Results per page, 1..{self.max_page_size} (default {self.page_size})."
        return parameters


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Service errors become their status code with a field -> messages body; Django's
    ValidationError from model validation becomes a 400 instead of a 500. A DataError (a
    value the database cannot store or compare: out of its range, a NUL character in
    PostgreSQL text) that got past validation is a 400 too — logged with its traceback,
    since the validation that should have caught it is missing — and any transaction of
    the request is rolled back (nothing half-applied)."""
    if isinstance(exc, ServiceError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, DataError):
        logger.warning("input the database refused reached it: %s", exc, exc_info=exc)
        set_rollback()
        return Response(
            {"detail": "A value is out of range or contains characters that cannot be stored."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    else:
        from django.core.exceptions import ValidationError as DjangoValidationError

        if isinstance(exc, DjangoValidationError):
            return Response(
                exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages},
                status=status.HTTP_400_BAD_REQUEST,
            )
    return drf_exception_handler(exc, context)
