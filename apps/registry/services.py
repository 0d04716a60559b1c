"""Every change to promotions: requests (and rollbacks), votes, withdrawal, expiry, policy
edits and attaching a model. Each checks the actor through apps.registry.policies, runs
in one transaction with its audit event, and queues side effects (the apply task,
notifications) for after the commit. Applying lives in apps.registry.applying."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput, NotAllowed
from apps.core.queue import enqueue_on_commit
from apps.projects.models import Project
from apps.registry import notices
from apps.registry import policies as rules
from apps.registry.evidence import capture, evaluate_gate
from apps.registry.lookups import project_of_tag
from apps.registry.mlflow import RegistryGateway, aliases_of, registry, tags_of
from apps.registry.models import (
    IN_FLIGHT,
    PROJECT_TAG,
    AliasHistory,
    Comparison,
    Decision,
    Kind,
    PromotionPolicy,
    PromotionRequest,
    RegisteredModel,
    Status,
    Vote,
)

# MLflow's own rule for alias names, less the names it reserves ("latest", "v<digits>").
ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
RESERVED_ALIAS_RE = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


def _schedule_apply(request: PromotionRequest) -> None:
    from apps.registry.tasks import apply_promotion

    enqueue_on_commit(apply_promotion, request.pk)


def _move(request: PromotionRequest, status: str, **fields: Any) -> None:
    """Change the status with a conditional UPDATE from the status we read, so a change
    made meanwhile by someone else is never overwritten."""
    if not request.can_transition_to(status):
        raise Conflict(f"Request #{request.pk} is {request.status}; it cannot become {status}.")
    now = timezone.now()
    changed = PromotionRequest.objects.filter(pk=request.pk, status=request.status).update(
        status=status, updated_at=now, **fields
    )
    if not changed:
        raise Conflict(f"Request #{request.pk} changed meanwhile; reload and try again.")
    for key, value in fields.items():
        setattr(request, key, value)
    request.status, request.updated_at = status, now


def _locked(pk: int) -> PromotionRequest:
    return (
        PromotionRequest.objects.select_for_update(of=("self",))
        .select_related("project__team", "model__project__team", "requested_by")
        .get(pk=pk)
    )


def save_model(model: RegisteredModel) -> RegisteredModel:
    """The saved mirror row of `model` (a lookup may hand over an unsaved one)."""
    if model.pk is not None:
        return model
    try:
        with transaction.atomic():
            saved, _ = RegisteredModel.objects.get_or_create(name=model.name, defaults={"project": model.project})
    except IntegrityError:  # made meanwhile by the reconciler or another request
        saved = RegisteredModel.objects.get(name=model.name)
    return RegisteredModel.objects.select_related("project__team").get(pk=saved.pk)


def _clean_version(value: Any) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidInput.field("version", "Give the model version as a whole number, e.g. 3.") from None
    if number < 1:
        raise InvalidInput.field("version", "Model versions start at 1.")
    return number


def _clean_justification(text: Any) -> str:
    cleaned = str(text or "").strip()
    if not cleaned:
        raise InvalidInput.field("justification", "Say why: the approvers decide on it.")
    return cleaned[:5000]


def _open_request(model: RegisteredModel, alias: str, version: int) -> PromotionRequest | None:
    return PromotionRequest.objects.filter(
        model=model, alias=alias, version=version, status__in=[Status.PENDING, *IN_FLIGHT]
    ).first()


def _new_request(
    actor: User,
    model: RegisteredModel,
    policy: PromotionPolicy,
    gateway: RegistryGateway,
    *,
    version: int,
    alias: str,
    justification: str,
    kind: str,
    holder_version: int | None,
    emergency: bool = False,
) -> PromotionRequest:
    """Check the version in MLflow, capture the evidence, then write the request, its
    audit event and the approvers' notification in one transaction."""
    candidate = gateway.get_model_version(model.name, version)
    if candidate is None:
        raise InvalidInput.field("version", f"MLflow has no version {version} of {model.name}.")
    if candidate.get("status", "READY") != "READY":
        raise InvalidInput.field("version", f"Version {version} is {candidate.get('status')}, not ready to serve.")
    holder = gateway.get_model_version(model.name, holder_version) if holder_version else None
    evidence = capture(gateway, alias, candidate, holder, model.project)
    model = save_model(model)
    with transaction.atomic(durable=True):
        # Serialise requests per model, so two identical ones at once cannot both pass the check.
        model = RegisteredModel.objects.select_for_update(of=("self",)).select_related("project__team").get(pk=model.pk)
        duplicate = _open_request(model, alias, version)
        if duplicate is not None:
            raise Conflict(f"Request #{duplicate.pk} already asks for that ({duplicate.status}).")
        now = timezone.now()
        gate = kind == Kind.PROMOTION  # a rollback undoes a move: the metric gate is for moves forward
        request = PromotionRequest.objects.create(
            project=model.project,
            model=model,
            version=version,
            alias=alias,
            kind=kind,
            emergency=emergency,
            justification=justification,
            requested_by=actor,
            evidence=evidence,
            required_approvals=policy.required_approvals,
            gate_metric=policy.gate_metric if gate else "",
            gate_comparison=policy.gate_comparison if gate and policy.gate_metric else "",
            created_at=now,
            updated_at=now,
            expires_at=now + timedelta(days=policy.expiry_days),
            status=Status.APPROVED if emergency else Status.PENDING,
            decided_at=now if emergency else None,
            approved_at=now if emergency else None,
        )
        if emergency:
            verb = AuditVerb.PROMOTION_EMERGENCY_ROLLBACK
        elif kind == Kind.ROLLBACK:
            verb = AuditVerb.PROMOTION_ROLLBACK_REQUESTED
        else:
            verb = AuditVerb.PROMOTION_PROMOTION_REQUESTED
        after = {**request.as_audit(), "justification": justification, "holder": holder_version}
        record(actor, verb, request, team=model.project.team, project=model.project, after=after)
        notices.request_made(request)
        if emergency:
            _schedule_apply(request)
    return request


def create_request(
    actor: User, model: RegisteredModel, *, version: Any, alias: Any, justification: Any
) -> PromotionRequest:
    """Ask for `alias` of `model` to point at `version` (members and leads of the team).

    400 for a bad version, an alias the policy does not allow or no justification; 409 when
    the version already holds the alias or the same request is open; 503 when MLflow is
    down (nothing is written). The evidence is captured from MLflow now."""
    project = model.project
    if not rules.can_request_promotion(actor, project):
        raise NotAllowed("Viewers cannot ask for promotions; ask a lead of the team for the member role.")
    policy = rules.policy_for(project)
    number = _clean_version(version)
    alias = str(alias or "").strip()
    if alias not in policy.allowed_aliases:
        raise InvalidInput.field(
            "alias", f"The policy of {project.full_slug} allows these aliases: {', '.join(policy.allowed_aliases)}."
        )
    text = _clean_justification(justification)
    gateway = registry()
    holder_version = gateway.get_alias(model.name, alias)
    if holder_version == number:
        raise Conflict(f"Version {number} already holds {alias}.")
    return _new_request(
        actor,
        model,
        policy,
        gateway,
        version=number,
        alias=alias,
        justification=text,
        kind=Kind.PROMOTION,
        holder_version=holder_version,
    )


def request_rollback(
    actor: User, model: RegisteredModel, *, alias: Any, justification: Any, emergency: bool = False
) -> PromotionRequest:
    """Ask to point `alias` back at its previous holder, through the same policy. With
    `emergency` a lead of the team skips the quorum: the request is approved at once (and
    audited as such) and applied like any other, so the history records it too."""
    project = model.project
    if emergency and not rules.can_emergency_rollback(actor, project):
        raise NotAllowed("Only a lead of the team (or a platform admin) may roll back without approval.")
    if not rules.can_request_promotion(actor, project):
        raise NotAllowed("Viewers cannot ask for rollbacks; ask a lead of the team for the member role.")
    policy = rules.policy_for(project)
    alias = str(alias or "").strip()
    if alias not in policy.allowed_aliases:
        raise InvalidInput.field("alias", f"{alias!r} is not an alias the policy of {project.full_slug} manages.")
    text = _clean_justification(justification)
    gateway = registry()
    from apps.registry.drift import settle_reverts, sync_aliases

    model = save_model(model)
    settle_reverts(gateway, model, alias)
    found = gateway.get_registered_model(model.name)
    if found is None:
        raise Conflict(f"MLflow no longer has a registered model called {model.name}.")
    # First record any move made directly in MLflow, so "previous" means what it says.
    sync_aliases(model, aliases_of(found))
    current = AliasHistory.objects.filter(model=model, alias=alias, valid_to__isnull=True).first()
    target = current.previous_version if current is not None else None
    if current is None or target is None:
        raise Conflict(f"Plinth has no previous holder of {model.name}@{alias} to roll back to.")
    return _new_request(
        actor,
        model,
        policy,
        gateway,
        version=target,
        alias=alias,
        justification=text,
        kind=Kind.ROLLBACK,
        holder_version=current.version,
        emergency=emergency,
    )


def _check_decider(actor: User, request: PromotionRequest, policy: PromotionPolicy) -> None:
    """rules.can_approve decides; this only says why not."""
    if rules.can_approve(actor, request, policy):
        return
    if actor.pk == request.requested_by_id:
        raise NotAllowed("Nobody approves or rejects their own request, whatever their role; withdraw it instead.")
    who = "the approvers the policy names" if policy.approver_ids() else "the team's leads"
    raise NotAllowed(f"Only {who} (and platform admins) decide promotion requests of {request.project}.")


def approve(actor: User, request: PromotionRequest, comment: str = "") -> PromotionRequest:
    """Approve (an eligible approver, never the requester). A second approval by the same
    person counts once. At the quorum the request becomes `approved` and the apply task is
    queued. 409 when it is no longer pending or the policy's metric gate fails."""
    return _decide(actor, request, Decision.APPROVE, comment)


def reject(actor: User, request: PromotionRequest, comment: str = "") -> PromotionRequest:
    """Reject (an eligible approver, never the requester): one rejection rejects."""
    return _decide(actor, request, Decision.REJECT, comment)


def _decide(actor: User, request: PromotionRequest, decision: str, comment: str) -> PromotionRequest:
    policy = rules.policy_for(request.project)
    _check_decider(actor, request, policy)
    if expire_if_due(request.pk):
        raise Conflict(f"Request #{request.pk} expired on {request.expires_at:%Y-%m-%d %H:%M}; ask again.")
    comment = str(comment or "").strip()[:5000]
    with transaction.atomic(durable=True):
        locked = _locked(request.pk)
        if locked.status != Status.PENDING:
            raise Conflict(f"Request #{locked.pk} is {locked.status}; only pending requests take decisions.")
        if decision == Decision.APPROVE:
            gate = evaluate_gate(locked)
            if gate.passed is False:
                raise Conflict(gate.text)
        vote = Vote.objects.filter(request=locked, voter=actor).first()
        if vote is not None and vote.decision == decision:
            return locked  # the same decision twice counts once
        before = {"decision": vote.decision} if vote is not None else None
        if vote is None:
            vote = Vote.objects.create(request=locked, voter=actor, decision=decision, comment=comment)
        else:  # a changed mind replaces the earlier decision
            vote.decision, vote.comment, vote.created_at = decision, comment, timezone.now()
            vote.save(update_fields=["decision", "comment", "created_at"])
        team, project = locked.project.team, locked.project
        record(
            actor,
            AuditVerb.PROMOTION_VOTE,
            locked,
            team=team,
            project=project,
            before=before,
            after={"decision": decision},
        )
        now = timezone.now()
        if decision == Decision.REJECT:
            _move(locked, Status.REJECTED, decided_at=now, status_reason=f"rejected by {actor.username}")
        else:
            approvals = Vote.objects.filter(request=locked, decision=Decision.APPROVE).count()
            if approvals < locked.required_approvals:
                return locked
            _move(locked, Status.APPROVED, decided_at=now, approved_at=now)
            _schedule_apply(locked)
        decided = AuditVerb.PROMOTION_REJECTED if locked.status == Status.REJECTED else AuditVerb.PROMOTION_APPROVED
        record(actor, decided, locked, team=team, project=project, after=locked.as_audit())
        notices.decided(locked, actor, comment)
    return locked


def withdraw(actor: User, request: PromotionRequest) -> PromotionRequest:
    """Withdraw a pending request (its requester; the team's leads and platform admins)."""
    if not rules.can_withdraw(actor, request):
        raise NotAllowed("Only the person who asked (or a lead of the team) can withdraw a request.")
    if expire_if_due(request.pk):
        raise Conflict(f"Request #{request.pk} already expired.")
    with transaction.atomic(durable=True):
        locked = _locked(request.pk)
        if locked.status != Status.PENDING:
            raise Conflict(f"Request #{locked.pk} is {locked.status}; only pending requests can be withdrawn.")
        _move(locked, Status.WITHDRAWN, decided_at=timezone.now(), status_reason=f"withdrawn by {actor.username}")
        record(actor, AuditVerb.PROMOTION_WITHDRAWN, locked, team=locked.project.team, project=locked.project)
        if actor.pk != locked.requested_by_id:
            notices.decided(locked, actor)
    return locked


def expire_if_due(pk: int) -> bool:
    """Expire request `pk` if it is pending past its expiry. True when this call expired it
    (or it already was expired): decisions then answer 409."""
    with transaction.atomic():
        locked = (
            PromotionRequest.objects.select_for_update(of=("self",))
            .select_related("project__team", "model", "requested_by")
            .filter(pk=pk, status__in=[Status.PENDING, Status.EXPIRED])
            .first()
        )
        if locked is None:
            return False
        if locked.status == Status.EXPIRED:
            return True
        if locked.expires_at > timezone.now():
            return False
        _move(locked, Status.EXPIRED, decided_at=timezone.now(), status_reason="nobody decided in time")
        record(None, AuditVerb.PROMOTION_EXPIRED, locked, team=locked.project.team, project=locked.project)
        notices.decided(locked, None)
    return True


def expire_due() -> int:
    """Expire every pending request past its expiry (the reconciler's first step)."""
    due = PromotionRequest.objects.filter(status=Status.PENDING, expires_at__lte=timezone.now())
    return sum(1 for pk in due.values_list("pk", flat=True) if expire_if_due(pk))


# -- policy -------------------------------------------------------------------------------
def _clean_aliases(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    aliases: list[str] = []
    for item in items:
        alias = str(item).strip()
        if not alias:
            continue
        if not ALIAS_RE.match(alias) or RESERVED_ALIAS_RE.match(alias):
            raise InvalidInput.field(
                "allowed_aliases", f"{alias!r} is not a usable alias: letters, digits, _ and -; not latest or v1, v2."
            )
        if alias not in aliases:
            aliases.append(alias)
    if not aliases:
        raise InvalidInput.field("allowed_aliases", "Allow at least one alias, e.g. champion.")
    return aliases


def _clean_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput.field(name, "Give a whole number.") from None
    if not low <= number <= high:
        raise InvalidInput.field(name, f"Choose between {low} and {high}.")
    return number


def _clean_approvers(project: Project, value: Any) -> list[User]:
    names = value.split(",") if isinstance(value, str) else list(value or [])
    wanted = sorted({str(n).strip() for n in names if str(n).strip()})
    eligible = {user.username: user for user in rules.approver_candidates(project).filter(username__in=wanted)}
    unknown = [name for name in wanted if name not in eligible]
    if unknown:
        raise InvalidInput.field(
            "approvers", f"Approvers must be members or leads of {project.team.slug}: {', '.join(unknown)} are not."
        )
    return [eligible[name] for name in wanted]


def update_policy(actor: User, project: Project, **changes: Any) -> PromotionPolicy:
    """Edit a project's promotion policy (leads of the team, platform admins), audited with
    the before and after. Fields: approvers (usernames; empty = the team's leads),
    required_approvals (1-10, at most the number of eligible approvers), expiry_days
    (1-90), allowed_aliases, gate_metric and gate_comparison (gte / lte)."""
    if not rules.can_edit_policy(actor, project):
        raise NotAllowed("Only the team's leads and platform admins edit the promotion policy.")
    with transaction.atomic(durable=True):
        policy, _ = PromotionPolicy.objects.select_for_update().get_or_create(project=project)
        before = policy.as_audit()
        approvers = None
        if changes.get("approvers") is not None:
            approvers = _clean_approvers(project, changes["approvers"])
        if changes.get("required_approvals") is not None:
            policy.required_approvals = _clean_int("required_approvals", changes["required_approvals"], 1, 10)
        if changes.get("expiry_days") is not None:
            policy.expiry_days = _clean_int("expiry_days", changes["expiry_days"], 1, 90)
        if changes.get("allowed_aliases") is not None:
            policy.allowed_aliases = _clean_aliases(changes["allowed_aliases"])
        if changes.get("gate_metric") is not None:
            policy.gate_metric = str(changes["gate_metric"]).strip()[:250]
        if changes.get("gate_comparison") is not None:
            policy.gate_comparison = str(changes["gate_comparison"]).strip()
        if policy.gate_metric and policy.gate_comparison not in Comparison.values:
            raise InvalidInput.field("gate_comparison", "Say whether the metric must be ≥ (gte) or ≤ (lte).")
        if not policy.gate_metric:
            policy.gate_comparison = ""
        named = [user.pk for user in approvers] if approvers is not None else policy.approver_ids()
        enough = rules.eligible_approvers(project, named).count()
        if policy.required_approvals > enough:
            raise InvalidInput.field(
                "required_approvals",
                f"{policy.required_approvals} approvals are needed but only {enough} people may approve; "
                "name more approvers (or leads) first.",
            )
        policy.updated_by, policy.updated_at = actor, timezone.now()
        policy.save()
        if approvers is not None:
            policy.approvers.set(approvers)
        after = policy.as_audit()
        if after != before:
            record(
                actor,
                AuditVerb.PROMOTION_POLICY_UPDATED,
                policy,
                team=project.team,
                project=project,
                before=before,
                after=after,
            )
    return policy


# -- models -------------------------------------------------------------------------------
def attach_model(actor: User, project: Project, name: Any) -> RegisteredModel:
    """Make a model registered outside Plinth part of `project` (leads, platform admins):
    sets its `plinth.project` tag in MLflow (the truth), then the mirror row. A model of
    another project moves only when the actor also manages that one."""
    if not rules.can_attach_model(actor, project):
        raise NotAllowed("Only the team's leads and platform admins attach models.")
    name = str(name or "").strip()
    if not name:
        raise InvalidInput.field("name", "Give the registered model's name as MLflow shows it.")
    gateway = registry()
    found = gateway.get_registered_model(name)
    if found is None:
        raise InvalidInput.field("name", f"MLflow has no registered model called {name!r}.")
    current = tags_of(found).get(PROJECT_TAG, "")
    if current and current != project.full_slug:
        owner = project_of_tag(current)
        if owner is not None and not rules.can_attach_model(actor, owner):
            raise Conflict(f"{name} belongs to {current}; a lead of that project must move it.")
        if PromotionRequest.objects.filter(model__name=name, status__in=[Status.PENDING, *IN_FLIGHT]).exists():
            raise Conflict(f"{name} has open promotion requests in {current}; let them finish first.")
    if current != project.full_slug:
        gateway.set_registered_model_tag(name, PROJECT_TAG, project.full_slug)
    with transaction.atomic(durable=True):
        row = RegisteredModel.objects.select_for_update().filter(name=name).first()
        if row is None:
            row = RegisteredModel.objects.create(name=name, project=project, attached_by=actor)
        elif row.project_id != project.pk:
            row.project, row.attached_by = project, actor
            row.save(update_fields=["project", "attached_by"])
        record(
            actor, AuditVerb.MODEL_ATTACHED, row, team=project.team, project=project,
            before={"project": current or None}, after={"project": project.full_slug},
        )  # fmt: skip
    return row
