"""Who hears about a rollout that went wrong, and what they read: when a revision fails its
pre-flight or a canary is rolled back automatically, the team's leads, the deployment's
creator and whoever started the revision get an email, and the team's webhook (if any) a
signed call (apps.notifications). Called inside the rollout's transactions: the deliveries
commit with the change and are sent after the commit."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from apps.access.roles import Role
from apps.accounts.models import User
from apps.deployments.models import Deployment, Revision
from apps.notifications.services import absolute_url, notify


def page_url(deployment: Deployment) -> str:
    """The deployment's page, as an absolute URL for emails and webhooks."""
    return absolute_url(reverse("deployments:detail", args=[deployment.pk]))


def recipients(deployment: Deployment, revision: Revision) -> list[User]:
    """The team's leads, the deployment's creator and the revision's starter (when a person
    started it), active accounts only, each once, by username."""
    ids = {deployment.created_by_id, revision.created_by_id} - {None}
    leads = User.objects.filter(memberships__team_id=deployment.project.team_id, memberships__role=Role.LEAD)
    people = User.objects.filter(is_active=True).filter(pk__in=[*ids, *leads.values_list("pk", flat=True)])
    return list(people.distinct().order_by("username"))


def _payload(deployment: Deployment, revision: Revision, reason: str) -> dict[str, Any]:
    return {
        "deployment": {
            "id": deployment.pk,
            "name": deployment.name,
            "project": deployment.project.full_slug,
            "model": deployment.model_name,
            "alias": deployment.alias,
            "url": page_url(deployment),
        },
        "revision": {"number": revision.number, "version": revision.version, "status": revision.status},
        "reason": reason,
    }


def _send(verb: str, deployment: Deployment, revision: Revision, headline: str, reason: str, after: str) -> None:
    where = f"{deployment.project.full_slug}/{deployment.name}"
    notify(
        verb,
        team=deployment.project.team,
        users=recipients(deployment, revision),
        subject=f"[Plinth] {where}: {headline}",
        body=(
            f"{headline} ({deployment.model_name} version {revision.version}, revision {revision.number}).\n\n"
            f"Why: {reason}\n\n{after}\n\n{page_url(deployment)}\n"
        ),
        payload=_payload(deployment, revision, reason),
    )


def rolled_back(deployment: Deployment, revision: Revision, reason: str) -> None:
    """A canary failed its health limits and was rolled back automatically."""
    _send(
        "deployment.rolled_back",
        deployment,
        revision,
        f"version {revision.version} was rolled back automatically",
        reason,
        "The stable revision serves 100 % of the requests again.",
    )


def preflight_failed(deployment: Deployment, revision: Revision, reason: str) -> None:
    """A new revision failed its pre-flight (it never received a request)."""
    _send(
        "deployment.preflight_failed",
        deployment,
        revision,
        f"version {revision.version} failed its pre-flight",
        reason,
        "It never received a request; what served before still serves.",
    )
