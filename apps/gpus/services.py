"""Every change to GPU state that a person or the idle policy makes: idle policies,
exemptions, prices, the notice to an idle launch's owner and the reclaim. Each runs in one
transaction with its audit event; notices (notifications app: email to the owner, the
team's webhook) and backend cancels are sent after commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.access import policies
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.gpus.models import FindingStatus, GpuPrice, IdleExemption, IdleFinding, IdlePolicy
from apps.launches.models import LIVE, Launch, Status
from apps.launches.services import transition
from apps.notifications.services import absolute_url, notify
from apps.projects.models import Project

POLICY_FIELDS = ("threshold_percent", "window_minutes", "notify", "reclaim", "grace_minutes")


def policy_for(project: Project) -> IdlePolicy:
    """The project's idle policy (the defaults, unsaved, when it has none)."""
    found = IdlePolicy.objects.filter(project=project).first()
    return found if found is not None else IdlePolicy.defaults(project)


def set_idle_policy(actor: Any, project: Project, **values: Any) -> IdlePolicy:
    """Set a project's idle policy (leads of its team, platform admins). Unknown keys are
    ignored; values are validated by the model (400 with the field's message)."""
    if not policies.can_manage_team(actor, project.team):
        raise NotAllowed("Only a lead of the team can change the project's idle policy.")
    with transaction.atomic(durable=True):
        policy = IdlePolicy.objects.select_for_update().filter(project=project).first() or IdlePolicy.defaults(project)
        before = policy.as_audit() if policy.pk else None
        for name in POLICY_FIELDS:
            if name in values and values[name] is not None:
                setattr(policy, name, values[name])
        policy.updated_by = actor
        policy.updated_at = timezone.now()
        try:
            policy.full_clean(exclude=["project", "updated_by"])
        except ValidationError as exc:
            raise InvalidInput("The idle policy is not valid.", fields=exc.message_dict) from exc
        policy.save()
        record(
            actor,
            AuditVerb.GPU_IDLE_POLICY_CHANGED,
            policy,
            team=project.team,
            project=project,
            before=before,
            after=policy.as_audit(),
        )
    return policy


def exempt_launch(actor: Any, launch: Launch, reason: str, expires_at: datetime | None = None) -> IdleExemption:
    """Exempt a launch from the idle policy (leads of its team, platform admins): its idle
    GPUs are still listed, but nobody is told and nothing is reclaimed."""
    team = launch.project.team
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only a lead of the team can exempt a launch from the idle policy.")
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput.field("reason", "Say why this launch may hold idle GPUs.")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput.field("expires_at", "The exemption must end in the future.")
    with transaction.atomic(durable=True):
        exemption, _ = IdleExemption.objects.update_or_create(
            launch=launch,
            defaults={
                "reason": reason[:2000],
                "created_by": actor,
                "created_at": timezone.now(),
                "expires_at": expires_at,
            },
        )
        IdleFinding.objects.filter(launch=launch, status__in=[FindingStatus.OPEN, FindingStatus.NOTIFIED]).update(
            status=FindingStatus.EXEMPT
        )
        record(
            actor,
            AuditVerb.GPU_IDLE_EXEMPTION_GRANTED,
            launch,
            team=team,
            project=launch.project,
            after={"reason": exemption.reason, "expires_at": expires_at},
        )
    return exemption


def remove_exemption(actor: Any, launch: Launch) -> bool:
    """End a launch's exemption (leads, platform admins). False when it had none."""
    team = launch.project.team
    if not policies.can_manage_team(actor, team):
        raise NotAllowed("Only a lead of the team can end an exemption.")
    with transaction.atomic(durable=True):
        exemption = IdleExemption.objects.select_for_update().filter(launch=launch).first()
        if exemption is None:
            return False
        before = {"reason": exemption.reason, "expires_at": exemption.expires_at}
        exemption.delete()
        # Notices already sent still count: the grace period does not start over.
        IdleFinding.objects.filter(launch=launch, status=FindingStatus.EXEMPT, notified_at__isnull=False).update(
            status=FindingStatus.NOTIFIED
        )
        IdleFinding.objects.filter(launch=launch, status=FindingStatus.EXEMPT).update(status=FindingStatus.OPEN)
        record(actor, AuditVerb.GPU_IDLE_EXEMPTION_REMOVED, launch, team=team, project=launch.project, before=before)
    return True


def set_gpu_price(actor: Any, product: str, price: Any) -> GpuPrice | None:
    """Set (or, with an empty price, remove) the price of one GPU-hour of `model` (platform
    admins). Returns the price row, None when removed."""
    if not policies.is_platform_admin(actor):
        raise NotAllowed("Only platform admins set GPU prices.")
    product = (product or "").strip()
    if not product:
        raise InvalidInput.field("product", "Name the GPU product, as the fleet page shows it.")
    with transaction.atomic(durable=True):
        existing = GpuPrice.objects.select_for_update().filter(product=product).first()
        before = {"price_per_hour": existing.price_per_hour} if existing else None
        if price in (None, ""):
            if existing is None:
                return None
            record(actor, AuditVerb.GPU_PRICE_REMOVED, existing, before=before)
            existing.delete()
            return None
        try:
            amount = Decimal(str(price))
        except InvalidOperation:
            raise InvalidInput.field("price", "Give the price per GPU-hour as a number.") from None
        if not amount.is_finite() or amount < 0 or amount >= Decimal("1000000"):
            raise InvalidInput.field("price", "The price per GPU-hour must be between 0 and 1,000,000.")
        row = existing or GpuPrice(product=product)
        row.price_per_hour = amount.quantize(Decimal("0.0001"))
        row.updated_by = actor
        row.updated_at = timezone.now()
        row.save()
        record(actor, AuditVerb.GPU_PRICE_SET, row, before=before, after={"price_per_hour": row.price_per_hour})
    return row


# --- what the idle policy does (the system acts: audit events have no person as actor) -------
def _tell_owner(verb: str, launch: Launch, subject: str, text: str, payload: dict[str, Any]) -> None:
    """Email the launch's owner and call the team's webhook, through the notifications app
    (deliveries are rows sent after commit, retried when a receiver fails)."""
    link = absolute_url(reverse("launches:detail", kwargs={"pk": launch.pk}))
    notify(
        verb,
        team=launch.project.team,
        users=[launch.created_by],
        subject=subject,
        body=f"{text}\n\n{link}\n",
        payload={
            "launch": launch.pk,
            "project": launch.project.full_slug,
            "owner": launch.created_by.username,
            **payload,
        },
    )


def notify_idle(launch: Launch, findings: Sequence[IdleFinding], policy: IdlePolicy, now: datetime) -> int:
    """Tell the launch's owner that some of its GPUs sit idle, once per finding. Returns how
    many findings this call marked (0 when another pass did it first)."""
    pks = [f.pk for f in findings]
    with transaction.atomic():
        marked = IdleFinding.objects.filter(pk__in=pks, status=FindingStatus.OPEN, notified_at__isnull=True).update(
            status=FindingStatus.NOTIFIED, notified_at=now
        )
        if not marked:
            return 0
        gpus = sorted(f.gpu.label for f in findings)
        record(
            None,
            AuditVerb.GPU_IDLE_NOTIFIED,
            launch,
            team=launch.project.team,
            project=launch.project,
            after={"gpus": ", ".join(gpus), "policy": policy.describe(), "owner": launch.created_by.username},
        )
        action = (
            f"If it stays idle, it will be cancelled after {policy.grace_minutes} minutes to free the GPUs."
            if policy.reclaim
            else "Please cancel it if you no longer need the GPUs."
        )
        _tell_owner(
            "gpu.idle",
            launch,
            f"Idle GPUs: {launch.job_name}",
            f"{launch.job_name} in {launch.project.full_slug} holds GPUs that have been idle "
            f"(utilization {policy.describe()}): {', '.join(gpus)}.\n\n{action}",
            {"gpus": gpus, "policy": policy.as_audit()},
        )
    return marked


def reclaim_launch(launch: Launch, findings: Sequence[IdleFinding], policy: IdlePolicy, now: datetime) -> bool:
    """Cancel a launch whose GPUs stayed idle past the grace period, as its project's policy
    says. The reason is written on the launch (its status line) and in the audit log; the
    backend cancel is sent after commit, as for a cancel from the launch page."""
    reason = (
        f"reclaimed by the idle GPU policy of {launch.project.full_slug}: GPU utilization "
        f"{policy.describe()} ({len(findings)} GPU{'s' if len(findings) != 1 else ''})"
    )
    with transaction.atomic():
        locked = Launch.objects.select_for_update().select_related("project__team", "created_by").get(pk=launch.pk)
        if locked.status not in LIVE or locked.status == Status.CANCELLING:
            return False
        if IdleExemption.objects.filter(launch=locked).exclude(expires_at__lte=now).exists():
            return False
        before = locked.status
        target = Status.CANCELLED if locked.status == Status.QUEUED else Status.CANCELLING
        if not transition(locked, target, status_reason=reason):
            raise Conflict(f"{locked.job_name} changed while it was being reclaimed; the next pass decides again.")
        IdleFinding.objects.filter(pk__in=[f.pk for f in findings]).update(
            status=FindingStatus.RECLAIMED, reclaimed_at=now, resolution=reason[:200]
        )
        for verb, after in (
            (AuditVerb.LAUNCH_CANCELLED, {"status": locked.status, "reason": reason}),
            (
                AuditVerb.GPU_IDLE_RECLAIMED,
                {"gpus": ", ".join(sorted(f.gpu.label for f in findings)), "reason": reason},
            ),
        ):
            record(
                None,
                verb,
                locked,
                team=locked.project.team,
                project=locked.project,
                before={"status": before},
                after=after,
            )
        _tell_owner(
            "gpu.reclaimed",
            locked,
            f"Reclaimed: {locked.job_name}",
            f"{locked.job_name} in {locked.project.full_slug} was cancelled: {reason}.",
            {"reason": reason},
        )
        from apps.launches.tasks import cancel_on_backend, close_mlflow_run

        enqueue_on_commit(cancel_on_backend if target == Status.CANCELLING else close_mlflow_run, locked.pk)
    return True
