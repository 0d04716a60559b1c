"""Applying an approved request to MLflow: claim → set the alias → tag the version → read
the alias back → record the history and mark the request `applied`, in that order.

Why it is idempotent and race-free:
- Requests for the same (model, alias) form a queue ordered by approval time; only its
  head may be claimed, and the claim runs under a row lock on the model, so two moves of
  one alias never interleave and they land in the order they were approved.
- The claim is a conditional UPDATE (approved → applying, or a released/expired lease):
  a second copy of the task finds nothing to claim and does nothing.
- Every MLflow step is idempotent (setting an alias to the version it already has, a tag
  to its value), so a retry after a crash repeats them harmlessly.
- The history row and `applied` are written in one transaction, only by the holder of the
  lease, once per request (AliasHistory.request is unique, and at most one current row
  per alias is a database constraint).
- An apply that fails after it may have moved the alias is marked `revert_needed`; the
  alias is put back before anything else moves it (never a half-applied state).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.queue import enqueue_on_commit
from apps.core.retry import RetryPolicy
from apps.registry import notices
from apps.registry.mlflow import MlflowError, MlflowUnavailable, registry
from apps.registry.models import (
    APPROVED_BY_TAG,
    IN_FLIGHT,
    REQUEST_TAG,
    AliasHistory,
    Decision,
    PromotionRequest,
    RegisteredModel,
    Source,
    Status,
)

logger = logging.getLogger(__name__)

# Longer than one attempt can take (a handful of MLflow calls, each with its timeout); a
# worker that dies mid-apply leaves a lease the next attempt may take over once it ends.
LEASE = timedelta(seconds=120)


def retry_policy() -> RetryPolicy:
    """Waits below 5 s, 10 s, 20 s, 40 s, ... at most 5 minutes (jittered;
    PLINTH_PROMOTION_RETRY_SECONDS sets the first), PLINTH_PROMOTION_APPLY_ATTEMPTS tries."""
    return RetryPolicy(
        base=settings.PLINTH_PROMOTION_RETRY_SECONDS, cap=300, attempts=settings.PLINTH_PROMOTION_APPLY_ATTEMPTS
    )


@dataclass(frozen=True)
class Outcome:
    text: str
    retry_in: int | None = None  # seconds until the task should run again


class LostClaim(Exception):
    """Our lease ended and another worker took the request over: stop, it finishes."""


class NotConfirmed(Exception):
    """MLflow did not read back what was just set (someone else moved it meanwhile)."""


def queue_head(model_id: int, alias: str) -> PromotionRequest | None:
    """The request that moves this alias next: the earliest approved of those in flight."""
    return (
        PromotionRequest.objects.filter(model_id=model_id, alias=alias, status__in=IN_FLIGHT)
        .order_by("approved_at", "pk")
        .first()
    )


def claim(pk: int) -> tuple[PromotionRequest, str] | Outcome:
    """Take request `pk` for applying, if it is the head of its alias's queue and nobody
    else holds it. Returns the request and the lease token, or why not."""
    with transaction.atomic():
        request = PromotionRequest.objects.filter(pk=pk).only("status", "model_id", "alias").first()
        if request is None:
            return Outcome("no such request")
        if request.status not in IN_FLIGHT:
            return Outcome(f"already {request.status}")
        # Serialise claims per model: the head check and the claim must see the same queue.
        RegisteredModel.objects.select_for_update().filter(pk=request.model_id).first()
        head = queue_head(request.model_id, request.alias)
        if head is not None and head.pk != pk:
            return Outcome(f"waiting for request #{head.pk}")
        now, token = timezone.now(), secrets.token_hex(8)
        claimable = Q(status=Status.APPROVED) | Q(status=Status.APPLYING) & (Q(lease_token="") | Q(lease_until__lt=now))
        claimed = (
            PromotionRequest.objects.filter(pk=pk)
            .filter(claimable)
            .update(
                status=Status.APPLYING,
                lease_token=token,
                lease_until=now + LEASE,
                next_attempt_at=None,
                apply_attempts=F("apply_attempts") + 1,
                updated_at=now,
            )
        )
    if not claimed:
        return Outcome("claimed by another worker")
    return PromotionRequest.objects.select_related("model__project__team", "project__team", "requested_by").get(
        pk=pk
    ), token


def _update(request: PromotionRequest, token: str, **fields: object) -> None:
    changed = PromotionRequest.objects.filter(pk=request.pk, status=Status.APPLYING, lease_token=token).update(
        updated_at=timezone.now(), **fields
    )
    if not changed:
        raise LostClaim()
    for key, value in fields.items():
        setattr(request, key, value)


def approvers_text(request: PromotionRequest) -> str:
    if request.emergency:
        return f"{request.requested_by.username} (emergency rollback)"
    names = (
        request.votes.filter(decision=Decision.APPROVE).order_by("created_at").values_list("voter__username", flat=True)
    )
    return ",".join(names)


def apply(pk: int) -> Outcome:
    """One attempt at applying request `pk` (what the Celery task runs)."""
    claimed = claim(pk)
    if isinstance(claimed, Outcome):
        return claimed
    request, token = claimed
    gateway = registry()
    name, alias, version = request.model.name, request.alias, request.version
    try:
        from apps.registry.drift import settle_reverts

        settle_reverts(gateway, request.model, alias)  # an earlier failed move is undone first
        holder = gateway.get_alias(name, alias)
        if not request.previous_known:
            previous = holder if holder != version else _recorded_holder(request)
            _update(request, token, previous_version=previous, previous_known=True)
        # Written before the move: if this attempt dies after it, the move can be undone.
        _update(request, token, revert_needed=holder != version)
        gateway.set_alias(name, alias, version)
        gateway.set_model_version_tag(name, version, REQUEST_TAG, str(request.pk))
        gateway.set_model_version_tag(name, version, APPROVED_BY_TAG, approvers_text(request))
        confirmed = gateway.get_alias(name, alias)
        if confirmed != version:
            raise NotConfirmed(f"MLflow reads {alias} → version {confirmed} right after setting it to {version}.")
    except LostClaim:
        return Outcome("lost the claim to another worker")
    except (MlflowUnavailable, NotConfirmed) as exc:
        return _retry_or_fail(request, token, str(exc))
    except MlflowError as exc:
        return _fail(request, token, f"MLflow refused: {exc.message}")
    return _record_applied(request, token)


def _recorded_holder(request: PromotionRequest) -> int | None:
    """When MLflow already points the alias at the target before our first move (someone
    set it directly), the previous holder is the one Plinth's history last recorded."""
    current = AliasHistory.objects.filter(model=request.model, alias=request.alias, valid_to__isnull=True).first()
    return current.version if current is not None and current.version != request.version else None


def _retry_or_fail(request: PromotionRequest, token: str, reason: str) -> Outcome:
    attempts = PromotionRequest.objects.values_list("apply_attempts", flat=True).get(pk=request.pk)
    policy = retry_policy()
    if policy.exhausted(attempts):
        return _fail(request, token, f"{reason} Gave up after {attempts} attempts.")
    delay = policy.delay(attempts)
    try:
        _update(
            request,
            token,
            lease_token="",  # released: the retry (or the reconciler) claims it again
            lease_until=None,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            status_reason=f"{reason} Attempt {attempts} of {policy.attempts}; trying again in {delay} s.",
        )
    except LostClaim:
        return Outcome("lost the claim to another worker")
    logger.info("promotion %s: %s; retrying in %s s", request.pk, reason, delay)
    return Outcome("retry", retry_in=delay)


def _kick_next(request: PromotionRequest) -> None:
    """The alias's queue moves on: send the task of the next request in it."""
    from apps.registry.tasks import apply_promotion

    following = queue_head(request.model_id, request.alias)
    if following is not None:
        enqueue_on_commit(apply_promotion, following.pk)


def _fail(request: PromotionRequest, token: str, reason: str) -> Outcome:
    with transaction.atomic():
        changed = PromotionRequest.objects.filter(pk=request.pk, status=Status.APPLYING, lease_token=token).update(
            status=Status.FAILED, status_reason=reason, lease_token="", lease_until=None, updated_at=timezone.now()
        )
        if not changed:
            return Outcome("lost the claim to another worker")
        request.status, request.status_reason = Status.FAILED, reason
        record(
            None, AuditVerb.PROMOTION_FAILED, request, team=request.project.team, project=request.project,
            after={**request.as_audit(), "reason": reason},
        )  # fmt: skip
        notices.apply_result(request)
        _kick_next(request)
    return Outcome("failed")


def _record_applied(request: PromotionRequest, token: str) -> Outcome:
    with transaction.atomic():
        model = (
            RegisteredModel.objects.select_for_update(of=("self",))
            .select_related("project__team")
            .get(pk=request.model_id)
        )
        locked = PromotionRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status != Status.APPLYING or locked.lease_token != token:
            return Outcome("lost the claim to another worker")
        now = timezone.now()
        if not AliasHistory.objects.filter(request=locked).exists():
            _close_current(model, locked, now)
            AliasHistory.objects.create(
                model=model,
                alias=locked.alias,
                version=locked.version,
                previous_version=locked.previous_version,
                valid_from=now,
                request=locked,
                source=Source.PLINTH,
            )
        PromotionRequest.objects.filter(pk=locked.pk, status=Status.APPLYING, lease_token=token).update(
            status=Status.APPLIED,
            applied_at=now,
            lease_token="",
            lease_until=None,
            revert_needed=False,
            status_reason="",
            updated_at=now,
        )
        # Earlier failed moves of this alias are superseded: never "revert" past this one.
        PromotionRequest.objects.filter(
            model=model, alias=locked.alias, status=Status.FAILED, revert_needed=True
        ).update(revert_needed=False)
        request.status, request.applied_at, request.status_reason = Status.APPLIED, now, ""
        record(
            None, AuditVerb.PROMOTION_APPLIED, request, team=model.project.team, project=model.project,
            after={**request.as_audit(), "previous_version": locked.previous_version},
        )  # fmt: skip
        notices.apply_result(request)
        _kick_next(request)
        _deployments_follow(model.name, locked.alias)
    return Outcome("applied")


def _deployments_follow(model_name: str, alias: str) -> None:
    """Deployments that follow the alias roll out its new version (their reconcile task is
    sent once this transaction commits)."""
    from apps.deployments.rollout import alias_moved

    alias_moved(model_name, alias)


def _close_current(model: RegisteredModel, request: PromotionRequest, now: datetime) -> None:
    """End the current history row of the alias. If MLflow's holder just before our move
    was not the one Plinth recorded, that move happened outside Plinth: record it first,
    so the history stays a chain (each row's previous is the row before)."""
    current = AliasHistory.objects.filter(model=model, alias=request.alias, valid_to__isnull=True).first()
    believed = current.version if current is not None else None
    if current is not None:
        current.valid_to = now
        current.save(update_fields=["valid_to"])
    if request.previous_known and request.previous_version != believed:
        AliasHistory.objects.create(
            model=model,
            alias=request.alias,
            version=request.previous_version,
            previous_version=believed,
            valid_from=now,
            valid_to=now,
            source=Source.OUTSIDE if current is not None else Source.OBSERVED,
        )
        if current is not None:
            notices.changed_outside(model, request.alias, request.previous_version, believed)
