"""The OpenAPI schema's error answers: one shared `Error` body and, per operation, the 4xx/5xx
codes the API conventions (API.md "Errors") say it can answer.

`PlinthAutoSchema` (settings REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]) adds to every
operation the codes that its shape implies, unless the view declared that code itself:

  400  it takes input: a request body or query parameters (a bad value, with field messages)
  415  it takes a body: one in a media type it does not read
  401  it needs a signed-in caller (not AllowAny): no or a bad token
  403  idem: visible but not allowed (a weaker role, or a platform-admin-only operation)
  404  it names something (a path parameter, a query parameter, a body that names objects,
       or a page past the last one): missing or not visible to the caller
  409  it changes state (POST/PUT/PATCH/DELETE): a state conflict (no longer pending, quota)
  503  the view declares `depends_on` (e.g. ("MLflow",)) for the operation: that
       dependency is unreachable

A view names its dependencies with a class attribute `depends_on`: a tuple of names for all
its operations, or a dict {viewset action: tuple} where only some actions need them.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import permissions, serializers

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# What every error answer looks like: {"detail": message} plus, for invalid input, one key per
# field with its messages (a list of strings; nested objects and lists for nested fields, as
# DRF reports them). Django's model validation may answer "detail" as a list of messages.
_MESSAGES: dict[str, Any] = {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An error: `detail` says why; for invalid input each field's messages.",
    "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}},
    "additionalProperties": {"anyOf": [_MESSAGES, {"type": "object"}]},
}

DESCRIPTIONS = {
    "400": "Invalid input: `detail` and, per field, its messages.",
    "401": "No credentials, or a token that is invalid, expired or revoked.",
    "403": "Visible to you but not allowed for your role.",
    "404": "Not found, or not visible to you (also a page past the last one).",
    "409": "A state conflict: the object changed state, or a quota or budget is exhausted.",
    "415": "The body's Content-Type is not one this operation reads (JSON, form, multipart).",
}
TOO_MANY = "Too many failed attempts: wait `Retry-After` seconds."


class ErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The body of every 4xx/5xx answer of the API (documentation only: the exception
    handler in apps.core.api writes it)."""

    detail = serializers.CharField()


class ErrorSerializerExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """Documents ErrorSerializer with its open field -> messages shape, which a DRF
    serializer cannot express."""

    target_class = ErrorSerializer

    def get_name(self, auto_schema: AutoSchema, direction: str) -> str:
        return "Error"

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        return dict(ERROR_SCHEMA)


def _dependencies(view: Any) -> tuple[str, ...]:
    declared = getattr(view, "depends_on", ())
    if isinstance(declared, dict):
        return tuple(declared.get(getattr(view, "action", None), ()))
    return tuple(declared)


class PlinthAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error answers listed in the module docstring."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses: dict[str, Any] = operation.setdefault("responses", {})
        parameters = operation.get("parameters", [])
        takes_query = any(p.get("in") == "query" for p in parameters)
        takes_path = any(p.get("in") == "path" for p in parameters)
        takes_body = "requestBody" in operation
        public = all(isinstance(p, permissions.AllowAny) for p in self.view.get_permissions())

        wanted: dict[str, str] = {}
        if takes_body or takes_query:
            wanted["400"] = DESCRIPTIONS["400"]
        if takes_body:
            wanted["415"] = DESCRIPTIONS["415"]
        if not public:
            wanted["401"] = DESCRIPTIONS["401"]
            wanted["403"] = DESCRIPTIONS["403"]
            if takes_path or takes_query or takes_body:
                wanted["404"] = DESCRIPTIONS["404"]
            if self.method in UNSAFE_METHODS:
                wanted["409"] = DESCRIPTIONS["409"]
        dependencies = _dependencies(self.view)
        if dependencies:
            wanted["503"] = f"{' or '.join(dependencies)} is unreachable; try again in a moment."
        for code, description in wanted.items():
            if code not in responses:
                responses[code] = self._error_response(code, description)
        return operation

    def _error_response(self, code: str, description: str) -> dict[str, Any]:
        response: dict[str, Any] = self._get_response_for_code(ErrorSerializer, code)
        response["description"] = description
        return response
