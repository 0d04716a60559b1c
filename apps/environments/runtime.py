"""What an environment means where a job or model server runs: the interpreter of the local
backend, the packages it can import, and the image and pod defaults of Kubernetes."""

from __future__ import annotations

import sys
from importlib import metadata
from typing import Any

from packaging.utils import canonicalize_name

from apps.environments.models import BuildStatus, Environment


def python_for(environment: Environment | None) -> str:
    """The interpreter (absolute path) a local job or model server of `environment` runs:
    the portal's own for the portal environment, for one without a local build, and for
    None (rows older than environments); the build's for a built one.
    Raises ValueError when its build is not ready (callers refuse such environments first)."""
    if environment is None or environment.is_portal or environment.build_id is None:
        return sys.executable
    build = environment.build
    assert build is not None
    if build.status != BuildStatus.READY or not build.python:
        raise ValueError(f"The environment {environment.label} has no ready build ({build.status}).")
    return build.python


def portal_packages() -> dict[str, str]:
    """{PEP 503-normalised distribution name: version} of what the portal's interpreter can
    import (the first of a name on sys.path, as import finds it)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name not in found:  # the first on sys.path wins, as for import
            found[name] = dist.version
    return found


def installed_packages(environment: Environment | None) -> dict[str, str]:
    """{distribution name: version} an environment's local interpreter can import: the
    build's recorded list, or the portal's own for the portal environment and None.
    An image-only environment (no local build) answers the portal's list too, as its local
    jobs run on the portal's interpreter."""
    if environment is None or environment.is_portal or environment.build_id is None:
        return portal_packages()
    assert environment.build is not None
    return dict(environment.build.packages or {})


def pod_defaults(environment: Environment | None) -> dict[str, Any]:
    """The environment's pod defaults, complete: {"node_selector": {str: str},
    "tolerations": [dict], "env": {str: str}} (empty parts when unset or no environment)."""
    raw = (environment.pod_defaults if environment is not None else None) or {}
    return {
        "node_selector": dict(raw.get("node_selector") or {}),
        "tolerations": [dict(t) for t in raw.get("tolerations") or []],
        "env": {str(k): str(v) for k, v in (raw.get("env") or {}).items()},
    }


def image_for(environment: Environment | None, fallback: str) -> str:
    """The container image a Kubernetes pod of `environment` runs: the environment's image
    when it names one, else `fallback` (the template's image, or the serving runtime's)."""
    if environment is not None and environment.image:
        return environment.image
    return fallback
