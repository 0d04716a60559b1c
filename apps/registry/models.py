"""Promotions: moving a registry alias (e.g. `champion`) of an MLflow registered model
becomes a request, approved under the project's policy, applied by a task and recorded.

MLflow holds the models, versions and aliases; Plinth holds which project a model belongs
to (mirrored from the registered-model tag `plinth.project`), the policy, the requests
with their votes and evidence, and the alias history."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.access.querysets import ScopedQuerySet, TeamScope
from apps.core.numbers import JSONSafeEncoder, MetricsJSONDecoder
from apps.projects.models import Project

PROJECT_TAG = "plinth.project"
REQUEST_TAG = "plinth.promotion_request"
APPROVED_BY_TAG = "plinth.approved_by"
DEFAULT_ALIASES = ["champion"]


def default_aliases() -> list[str]:
    return list(DEFAULT_ALIASES)


class RegisteredModel(models.Model):
    """Plinth's mirror of one MLflow registered model and the project it belongs to.

    The truth is the MLflow tag `plinth.project = "<team>/<project>"`; this row exists so
    that access checks, requests and alias history have something to point at. It is
    written by services (a request, an attach) and by the alias reconciler, never by a GET."""

    name = models.CharField(max_length=256, unique=True)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="registered_models")
    attached_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ScopedQuerySet["RegisteredModel"].as_manager()
    access_scope = TeamScope("project__team")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Comparison(models.TextChoices):
    GTE = "gte", "≥"
    LTE = "lte", "≤"


class PromotionPolicy(models.Model):
    """The rules of one project's promotions, edited by its leads and platform admins.

    No row means the defaults: the team's leads approve, one approval is enough, requests
    expire after 7 days, only `champion` may be requested, no metric gate. Two rules are
    not configurable: nobody approves their own request, and one rejection rejects."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="promotion_policy")
    # Empty: the team's leads. Named approvers replace that default (and must be members).
    approvers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")
    required_approvals = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    expiry_days = models.PositiveSmallIntegerField(default=7, validators=[MinValueValidator(1), MaxValueValidator(90)])
    allowed_aliases = models.JSONField(default=default_aliases)
    gate_metric = models.CharField(max_length=250, blank=True)
    gate_comparison = models.CharField(max_length=3, choices=Comparison.choices, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        verbose_name_plural = "promotion policies"

    def __str__(self) -> str:
        return f"policy of {self.project}"

    def approver_ids(self) -> list[int]:
        """Named approvers (empty for the default: the team's leads)."""
        if self.pk is None:
            return []
        return [user.pk for user in self.approvers.all()]

    @property
    def gate_text(self) -> str:
        if not self.gate_metric:
            return ""
        return f"{self.gate_metric} {Comparison(self.gate_comparison or 'gte').label} the current holder's"

    def as_audit(self) -> dict[str, Any]:
        return {
            "approvers": sorted(user.username for user in self.approvers.all()) if self.pk else [],
            "required_approvals": self.required_approvals,
            "expiry_days": self.expiry_days,
            "allowed_aliases": list(self.allowed_aliases),
            "gate_metric": self.gate_metric,
            "gate_comparison": self.gate_comparison,
        }


class Status(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    APPLYING = "applying", "Applying"
    APPLIED = "applied", "Applied"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Failed"


TERMINAL = frozenset({Status.APPLIED, Status.REJECTED, Status.WITHDRAWN, Status.EXPIRED, Status.FAILED})
# Approved or being applied: the alias is about to move; these form a queue per (model, alias).
IN_FLIGHT = frozenset({Status.APPROVED, Status.APPLYING})

# The state machine. Every change is a conditional UPDATE from one of these.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.APPROVED, Status.REJECTED, Status.WITHDRAWN, Status.EXPIRED}),
    Status.APPROVED: frozenset({Status.APPLYING}),
    Status.APPLYING: frozenset({Status.APPLIED, Status.FAILED}),
}


class Kind(models.TextChoices):
    PROMOTION = "promotion", "Promotion"
    ROLLBACK = "rollback", "Rollback"


class PromotionRequest(models.Model):
    """A request to point `alias` of `model` at `version`, with the evidence captured when
    it was made and the rules (quorum, gate) of the policy at that moment.

    pending → approved (quorum) | rejected (one rejection) | withdrawn | expired;
    approved → applying (the apply task's claim) → applied (MLflow confirmed) | failed."""

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="promotion_requests")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="requests")
    version = models.PositiveIntegerField()
    alias = models.CharField(max_length=255)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PROMOTION)
    emergency = models.BooleanField(default=False)  # a lead's rollback that skipped the quorum
    justification = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    status_reason = models.TextField(blank=True)
    # {"captured_at", "alias", "candidate": {version, run_id, run_name, metrics}, "holder": {...} | None}
    # NaN/inf metrics are stored as "NaN"/"Infinity"/"-Infinity" and read back as floats.
    evidence = models.JSONField(default=dict, blank=True, encoder=JSONSafeEncoder, decoder=MetricsJSONDecoder)
    # The policy's rules as they were when the request was made: editing a policy does not
    # move the goalposts of requests already in front of the approvers.
    required_approvals = models.PositiveSmallIntegerField(default=1)
    gate_metric = models.CharField(max_length=250, blank=True)
    gate_comparison = models.CharField(max_length=3, choices=Comparison.choices, blank=True)
    # Filled by the apply task: the version MLflow said held the alias just before the move.
    previous_version = models.PositiveIntegerField(null=True, blank=True)
    previous_known = models.BooleanField(default=False)
    # The alias may have been moved by an apply that then failed: the reconciler puts it back.
    revert_needed = models.BooleanField(default=False)
    apply_attempts = models.PositiveSmallIntegerField(default=0)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    objects = ScopedQuerySet["PromotionRequest"].as_manager()
    access_scope = TeamScope("project__team")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["model", "alias", "status"]),
            models.Index(fields=["status", "expires_at"]),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.model.name} v{self.version} → {self.alias}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_pending(self) -> bool:
        return self.status == Status.PENDING

    def can_transition_to(self, status: str) -> bool:
        return status in TRANSITIONS.get(self.status, frozenset())

    def as_audit(self) -> dict[str, Any]:
        return {
            "model": self.model.name,
            "version": self.version,
            "alias": self.alias,
            "kind": self.kind,
            "status": self.status,
            "emergency": self.emergency,
        }


class Decision(models.TextChoices):
    APPROVE = "approve", "Approved"
    REJECT = "reject", "Rejected"


class Vote(models.Model):
    """One approver's decision on one request. One row per person: a second vote by the
    same person counts once (a changed mind replaces the decision)."""

    request = models.ForeignKey(PromotionRequest, on_delete=models.CASCADE, related_name="votes")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["request", "voter"], name="one_vote_per_person")]

    def __str__(self) -> str:
        return f"{self.voter} {self.decision} #{self.request_id}"


class Source(models.TextChoices):
    PLINTH = "plinth", "Plinth"
    OUTSIDE = "outside", "Changed outside Plinth"
    OBSERVED = "observed", "Found in MLflow"


class AliasHistory(models.Model):
    """Which version held `alias` of `model` from when to when, and why.

    `valid_to` empty = the current holder; at most one such row per (model, alias), which
    the database enforces, so two writers can never both record a current holder.
    `version` empty = the alias was removed. `request` is set for moves Plinth made (one
    row per request); `source` says whether Plinth moved it, someone changed it directly
    in MLflow, or Plinth found it set when it first saw the model."""

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="alias_history")
    alias = models.CharField(max_length=255)
    version = models.PositiveIntegerField(null=True, blank=True)
    previous_version = models.PositiveIntegerField(null=True, blank=True)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_to = models.DateTimeField(null=True, blank=True)
    request = models.OneToOneField(
        PromotionRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="history"
    )
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PLINTH)

    class Meta:
        ordering = ["-valid_from", "-id"]
        verbose_name_plural = "alias history"
        constraints = [
            models.UniqueConstraint(
                fields=["model", "alias"], condition=Q(valid_to__isnull=True), name="one_current_holder_per_alias"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias} = v{self.version}"

    @property
    def is_current(self) -> bool:
        return self.valid_to is None
