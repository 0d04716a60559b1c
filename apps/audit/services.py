"""The one way to write an audit event."""

from __future__ import annotations

from typing import Any

from django.db import models

from apps.audit.models import AuditEvent
from apps.audit.verbs import AuditVerb
from apps.core import context


def record(
    actor: Any,
    verb: AuditVerb,
    target: models.Model,
    *,
    team: Any = None,
    project: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append an audit event for `actor` doing `verb` to `target`. Call it inside the
    service's transaction so the event and the change commit (or roll back) together.
    The request id and client IP come from the request context (or a task's id).
    `verb` must be an AuditVerb member: a plain string, even a known one, raises TypeError,
    so a typo or an unlisted verb fails where it is written, not in a report later."""
    if not isinstance(verb, AuditVerb):
        raise TypeError(f"audit verbs are AuditVerb members, not {verb!r}")
    ctx = context.current()
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_label=user.get_username() if user else "system",
        verb=verb.value,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_label=str(target)[:200],
        team_id=team.pk if team is not None else None,
        team_label=str(team) if team is not None else "",
        project_id=project.pk if project is not None else None,
        project_label=str(project) if project is not None else "",
        before=before,
        after=after,
        request_id=ctx.request_id,
        ip=ctx.ip,
    )
