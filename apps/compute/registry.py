"""Which backend runs a launch."""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings

from apps.compute.base import BackendDisabled
from apps.core.errors import InvalidInput


def check_enabled(name: str) -> None:
    """Refuse new work on a backend this installation has switched off.

    Raises BackendDisabled (a Conflict: 409 to API callers) for "local" when
    PLINTH_LOCAL_BACKEND_ENABLED is false (its default in production, because a local job
    runs as the worker's own OS user). Launches already on the backend are not affected:
    `get_backend` still serves them, so they can be watched, cancelled and finished."""
    if name == "local" and not settings.PLINTH_LOCAL_BACKEND_ENABLED:
        raise BackendDisabled(
            "The local backend is disabled on this installation (PLINTH_LOCAL_BACKEND_ENABLED is off): "
            "local jobs would run as the worker's own user. Move the project to the kubernetes backend, "
            "or ask a platform admin to enable the local backend."
        )


@cache
def get_backend(name: str) -> Any:
    """The backend object for `name` ("local" or "kubernetes"), built once per process."""
    if name == "local":
        from apps.compute.local import LocalBackend

        return LocalBackend()
    if name == "kubernetes":
        from apps.compute.kubernetes import KubernetesBackend

        return KubernetesBackend()
    raise InvalidInput.field("backend", f"Unknown backend {name!r}.")
