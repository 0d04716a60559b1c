"""Errors that services raise. Pages and the API map them to status codes in one place each:
400 invalid input (with field messages), 403 not allowed, 404 not found, 409 state
conflict, 503 a dependency (MLflow, the cluster) is down."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, fields: dict[str, list[str]] | None = None) -> None:
        self.message = message or self.default_message
        self.fields = fields or {}
        super().__init__(self.message)

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"detail": self.message}
        body.update(self.fields)
        return body


class InvalidInput(ServiceError):
    status_code = 400

    @classmethod
    def field(cls, name: str, message: str) -> InvalidInput:
        return cls(message, fields={name: [message]})


class NotAllowed(ServiceError):
    status_code = 403
    default_message = "You do not have permission to do that."


class NotFound(ServiceError):
    status_code = 404
    default_message = "Not found."


class Conflict(ServiceError):
    status_code = 409
    default_message = "That conflicts with the current state."


class Unavailable(ServiceError):
    status_code = 503
    default_message = "A service Plinth depends on is unreachable."
