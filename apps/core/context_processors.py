from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from apps.access import policies
from apps.registry.policies import pending_count

# The sections of the portal, in navigation order. Sections whose pages arrive later are
# shown (so people learn where things will live) but not linked.
SECTIONS = [
    ("home", "Home", "home"),
    ("teams", "Teams", "teams:list"),
    ("projects", "Projects", "projects:list"),
    ("launches", "Launch", "launches:list"),
    ("tracking", "Runs", "tracking:index"),
    ("registry", "Models", "registry:index"),
    ("deployments", "Deployments", "deployments:list"),
    ("gpus", "GPUs", "gpus:index"),
    ("environments", "Environments", "environments:list"),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    admin = policies.is_platform_admin(user)
    return {
        "nav_sections": SECTIONS,
        "nav_is_admin": admin,
        "nav_pending_approvals": pending_count(user) if user.is_authenticated else 0,
        "nav_can_audit": user.is_authenticated and policies.can_view_audit(user),
        "plinth_env": settings.PLINTH_ENV,
    }
