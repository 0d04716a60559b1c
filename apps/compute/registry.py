"""Which backend runs a launch."""

from __future__ import annotations

from functools import cache
from typing import Any

from apps.core.errors import InvalidInput


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
