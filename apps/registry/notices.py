"""Who hears about promotions, and what they read: approvers of a new request, the
requester of the decision and of the apply result, leads of an alias changed outside
Plinth. Called inside the services' transactions (deliveries commit with the change)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from apps.access.roles import Role
from apps.accounts.models import User
from apps.notifications.services import absolute_url, notify
from apps.registry.models import PromotionRequest, RegisteredModel
from apps.registry.policies import eligible_approvers


def approvers_of(request: PromotionRequest) -> list[User]:
    """The people who may decide the request (policies.eligible_approvers), without the
    requester. Platform admins may decide too, but are not mailed about every team's
    requests."""
    people = eligible_approvers(request.project).exclude(pk=request.requested_by_id)
    return list(people.order_by("username"))


def leads_of(model: RegisteredModel) -> list[User]:
    return list(
        User.objects.filter(is_active=True, memberships__team=model.project.team, memberships__role=Role.LEAD).order_by(
            "username"
        )
    )


def _payload(request: PromotionRequest, **extra: Any) -> dict[str, Any]:
    return {
        "request": {
            "id": request.pk,
            "url": absolute_url(reverse("registry:request", args=[request.pk])),
            "project": request.project.full_slug,
            "model": request.model.name,
            "version": request.version,
            "alias": request.alias,
            "kind": request.kind,
            "emergency": request.emergency,
            "status": request.status,
            "status_reason": request.status_reason,
            "requested_by": request.requested_by.username,
        },
        **extra,
    }


def _what(request: PromotionRequest) -> str:
    verb = "roll back" if request.kind == "rollback" else "promote"
    return f"{verb} {request.model.name} version {request.version} to {request.alias}"


def request_made(request: PromotionRequest) -> None:
    url = absolute_url(reverse("registry:request", args=[request.pk]))
    emergency = " (emergency: already approved)" if request.emergency else ""
    notify(
        "promotion.requested",
        team=request.project.team,
        users=approvers_of(request),
        subject=f"[Plinth] {request.requested_by.username} asks to {_what(request)}{emergency}",
        body=(
            f"{request.requested_by.username} asks to {_what(request)} in {request.project.full_slug}.\n\n"
            f"Why: {request.justification}\n\nEvidence and your decision: {url}\n"
        ),
        payload=_payload(request),
    )


def decided(request: PromotionRequest, by: User | None, comment: str = "") -> None:
    """The requester hears the decision: approved, rejected, withdrawn by a lead, expired."""
    who = f" by {by.username}" if by is not None else ""
    note = f"\n\nComment: {comment}" if comment else ""
    url = absolute_url(reverse("registry:request", args=[request.pk]))
    notify(
        f"promotion.{request.status}",
        team=request.project.team,
        users=[request.requested_by],
        subject=f"[Plinth] Your request to {_what(request)} was {request.status}{who}",
        body=f"Your request #{request.pk} to {_what(request)} was {request.status}{who}.{note}\n\n{url}\n",
        payload=_payload(request, decided_by=by.username if by else None, comment=comment),
    )


def apply_result(request: PromotionRequest) -> None:
    """The requester hears whether MLflow now says so (applied) or why not (failed)."""
    url = absolute_url(reverse("registry:request", args=[request.pk]))
    if request.status == "applied":
        text = f"{request.model.name}@{request.alias} now points at version {request.version}, as MLflow confirms."
    else:
        text = f"Plinth could not move {request.model.name}@{request.alias}: {request.status_reason}"
    notify(
        f"promotion.{request.status}",
        team=request.project.team,
        users=[request.requested_by],
        subject=f"[Plinth] {request.model.name}@{request.alias}: request #{request.pk} {request.status}",
        body=f"{text}\n\n{url}\n",
        payload=_payload(request),
    )


def changed_outside(model: RegisteredModel, alias: str, version: int | None, previous: int | None) -> None:
    """The team's leads hear that an alias moved without a Plinth request."""
    url = absolute_url(reverse("registry:model", args=[model.name]))
    now = f"version {version}" if version is not None else "nothing (the alias was removed)"
    notify(
        "alias.changed_outside",
        team=model.project.team,
        users=leads_of(model),
        subject=f"[Plinth] {model.name}@{alias} was changed outside Plinth",
        body=(
            f"{model.name}@{alias} in {model.project.full_slug} now points at {now}; Plinth's record said version "
            f"{previous}. Nobody asked through Plinth: the change was made directly in MLflow.\n\n{url}\n"
        ),
        payload={
            "model": model.name,
            "project": model.project.full_slug,
            "alias": alias,
            "version": version,
            "previous_version": previous,
            "url": url,
        },
    )
