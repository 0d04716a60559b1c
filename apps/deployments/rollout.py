"""The rollout: one reconciler that makes a deployment's revisions and the serving backend
match its intent, one step further on every pass (the launch pattern, ARCHITECTURE.md).

A pass: resolve the version the deployment should serve (its pinned version, or its alias
read from MLflow now) → a revision for it (started) → pre-flight of starting revisions
(the model server answers its health check, then a prediction on the input example
answers 2xx) → a ready revision gets the canary share (or 100 % when nothing serves or the
canary is 0 %) → after `canary_minutes` the canary's error rate and p95 latency decide:
100 % (the old revision stays warm for PLINTH_ROLLBACK_WINDOW_SECONDS) or an automatic
rollback → crashed model servers are restarted (their share moves to the other serving
revision meanwhile) → warm revisions past the window are retired → the deployment's status.

Why two passes at once (a beat pass and a task sent by a promotion) are safe: every
decision is written under a short row lock on the deployment (`select_for_update`), after
reading the revisions again under it and checking that what the pass observed still holds;
the backend is called only outside transactions, and all its methods are idempotent. A
worker killed between the write and the backend call leaves the intent in the rows: the next
pass calls the backend again (a revision whose model server is gone is started, the split
is applied again, a retired or failed revision that was not stopped is stopped).

Which version the deployment "follows" is the version of the revision of its latest
`started` event: a new one is started only when the target differs from it, so a failed
pre-flight, an automatic or a manual rollback are not retried until the alias moves again
(the page shows the drift meanwhile), or, for a failure, until a person changes the
deployment (`updated_at`, which only people's changes move: an input example given). A
manual rollback that needs a retired version back starts a revision marked by its
`rolled_back` event instead; it takes 100 % without canary."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import Conflict, InvalidInput
from apps.core.queue import enqueue_on_commit
from apps.deployments import environment as serving_environment
from apps.deployments import notices
from apps.deployments.examples import NoInputExample, input_example
from apps.deployments.models import (
    LIVE_REVISION_STATUSES,
    Deployment,
    DeploymentStatus,
    Revision,
    RevisionStatus,
    RolloutEvent,
    RolloutStep,
)
from apps.deployments.serving.base import Probe, RevisionMetrics, ServingBackend, ServingUnavailable
from apps.deployments.serving.registry import serving_backend
from apps.environments.models import Environment
from apps.registry.mlflow import MlflowError, MlflowUnavailable, registry

logger = logging.getLogger(__name__)

STARTING_POLL_SECONDS = 2.0  # how often a starting revision is looked at while a rollout is in flight
LOG_TAIL = 30  # lines of a model server's log quoted in a failure's reason
REASON_LIMIT = 4000


class _Unknown:
    """The target version could not be read (MLflow is down): change nothing about it."""


UNKNOWN = _Unknown()


@dataclass
class Pass:
    """What one reconcile pass observed and did (returned for logs and tests)."""

    target: int | _Unknown | None = None
    actions: list[str] | None = None

    def did(self, what: str) -> None:
        if self.actions is None:
            self.actions = []
        self.actions.append(what)

    def __str__(self) -> str:
        return ", ".join(self.actions or []) or "nothing to do"


# -- entry points ----------------------------------------------------------------------------
def reconcile(deployment_pk: int) -> str:
    """One pass over deployment `deployment_pk` (see the module docstring); returns what it
    did, as text. Safe to run any time, twice at once included. A serving backend that is
    unreachable ends the pass (ServingUnavailable is logged, nothing half-written); MLflow
    down only stops a new rollout from starting."""
    deployment = _load(deployment_pk)
    if deployment is None:
        return "no such deployment"
    backend = serving_backend(deployment.backend)
    if deployment.status == DeploymentStatus.DELETING:
        return _delete(deployment, backend)
    done = Pass()
    try:
        _reconcile(deployment, backend, done)
    except ServingUnavailable as exc:
        logger.warning("deployment %s: serving backend unavailable: %s", deployment.pk, exc.message)
        done.did(f"serving backend unavailable ({exc.message})")
    return str(done)


def alias_moved(model_name: str, alias: str) -> int:
    """Send the reconcile task of every deployment following `model_name@alias` once the
    current transaction commits (an applied promotion, an alias changed in MLflow).
    Returns how many were sent."""
    from apps.deployments.tasks import reconcile_deployment

    pks = list(
        Deployment.objects.filter(model_name=model_name, alias=alias, pinned_version__isnull=True)
        .exclude(status=DeploymentStatus.DELETING)
        .values_list("pk", flat=True)
    )
    for pk in pks:
        enqueue_on_commit(reconcile_deployment, pk)
    return len(pks)


def rollback(actor: Any, deployment: Deployment) -> Revision:
    """Send 100 % of the traffic back to the previous revision at once (the caller checked
    that `actor` may change the deployment). Returns the revision that serves, or will
    serve, the traffic.

    - A canary in flight: the canary leaves, the stable revision takes 100 %.
    - Else the revision that served before the current one: if it is still warm (`ready`)
      it takes 100 % now and the current one is retired; if it was retired, a new revision
      of its version starts and takes 100 % as soon as its pre-flight passes (no canary),
      the current one serving until then.
    Audited (deployment.rollback) and on the timeline. Raises Conflict (409) when nothing
    serves, nothing served before, a rollback is already starting, or the deployment is
    being deleted."""
    with _locked(deployment.pk) as locked:
        if locked is None or locked.status == DeploymentStatus.DELETING:
            raise Conflict("The deployment is being deleted.")
        revisions = list(locked.revisions.all())
        serving = [r for r in revisions if r.status == RevisionStatus.SERVING]
        if not serving:
            raise Conflict("Nothing serves yet: there is nothing to roll back from.")
        stable = _stable(serving)
        canary = next((r for r in serving if r.is_canary), None)
        who = _name(actor)
        if canary is not None and stable is not None:
            _retire_now(canary, f"rolled back by {who} during its canary")
            _set(stable, traffic=100)
            message = (
                f"{who} rolled back: revision {canary.number} (version {canary.version}) left its canary; "
                f"revision {stable.number} (version {stable.version}) serves 100 %."
            )
            return _rolled_back(locked, actor, message, on=canary, to=stable, left=canary.number)
        current = stable or serving[0]
        if any(r.status == RevisionStatus.STARTING and _is_rollback(r) for r in revisions):
            raise Conflict("A rollback is already starting: wait for its pre-flight.")
        previous = rollback_target(revisions)
        if previous is None:
            raise Conflict(
                f"Revision {current.number} (version {current.version}) is the first version this deployment "
                "served: there is nothing to go back to."
            )
        for other in revisions:  # an unfinished rollout would roll forward again: it ends here
            unfinished = other.status in (RevisionStatus.STARTING, RevisionStatus.READY) and other.serving_at is None
            if unfinished and other.pk != previous.pk:
                _retire_now(other, f"rollout abandoned: {who} rolled back to version {previous.version}")
        if previous.status == RevisionStatus.READY:
            _take_all(previous)
            _retire_now(current, f"rolled back by {who}")
            message = (
                f"{who} rolled back to revision {previous.number} (version {previous.version}), warm: it serves "
                f"100 % now; revision {current.number} (version {current.version}) is retired."
            )
            return _rolled_back(locked, actor, message, on=previous, to=previous, left=current.number)
        made = _new_revision(locked, previous.version, previous.run_id, actor)
        message = (
            f"{who} rolled back to version {previous.version}: revision {made.number} starts and takes 100 % "
            f"once its pre-flight passes; revision {current.number} serves until then."
        )
        return _rolled_back(locked, actor, message, on=made, to=made, left=current.number)


def _rolled_back(locked: Deployment, actor: Any, message: str, *, on: Revision, to: Revision, left: int) -> Revision:
    """Record a manual rollback (inside its locked transaction): the timeline event on `on`,
    the audit event naming `to` (the revision that serves, or will) and `left` (the number
    of the one that left), the deployment's status, and a reconcile pass after commit.
    Returns `to`."""
    _event(locked, on, RolloutStep.ROLLED_BACK, message, actor=actor)
    _audit(actor, AuditVerb.DEPLOYMENT_ROLLBACK, locked, to, reason=message, left=left)
    _update_status(locked)
    enqueue_reconcile(locked.pk)
    return to


def rollback_target(revisions: list[Revision]) -> Revision | None:
    """The revision a manual rollback sends the traffic to, among all of a deployment's
    `revisions` (any order): during a canary the stable revision; else the newest one
    that served before the current one with another version. None: nothing to go back to
    (nothing serves, or the current revision is the first version served). The page
    offers "Roll back" only when there is one; `rollback` raises Conflict when not."""
    serving = [r for r in revisions if r.status == RevisionStatus.SERVING]
    if not serving:
        return None
    stable = _stable(serving)
    if stable is not None and any(r.is_canary for r in serving):
        return stable
    current = stable or serving[0]
    earlier = sorted(
        (
            r
            for r in revisions
            if r.number < current.number and r.serving_at is not None and r.version != current.version
        ),
        key=lambda r: -r.number,
    )
    return earlier[0] if earlier else None


def enqueue_reconcile(deployment_pk: int) -> None:
    """Send reconcile_deployment(pk) once the current transaction commits."""
    from apps.deployments.tasks import reconcile_deployment

    enqueue_on_commit(reconcile_deployment, deployment_pk)


def next_pass_in(deployment_pk: int) -> float | None:
    """Seconds until a pass over the deployment has something to do again while a rollout
    is in flight (a revision starting: 2 s; a canary: the rest of its minutes), else None
    (beat's periodic pass is enough)."""
    revisions = list(
        Revision.objects.filter(deployment_id=deployment_pk, status__in=LIVE_REVISION_STATUSES).only(
            "status", "is_canary", "canary_started_at", "serving_at"
        )
    )
    if any(r.status == RevisionStatus.STARTING for r in revisions):
        return STARTING_POLL_SECONDS
    if any(r.status == RevisionStatus.READY and r.serving_at is None for r in revisions):
        return 0.5
    canary = next((r for r in revisions if r.is_canary and r.canary_started_at is not None), None)
    if canary is None or canary.canary_started_at is None:
        return None
    minutes = Deployment.objects.filter(pk=deployment_pk).values_list("canary_minutes", flat=True).first()
    if minutes is None:
        return None
    due = canary.canary_started_at + timedelta(minutes=float(minutes))
    return max(1.0, (due - timezone.now()).total_seconds() + 0.5)


# -- settings ------------------------------------------------------------------------------------
def rollback_window() -> timedelta:
    """How long a revision that left the traffic stays warm (PLINTH_ROLLBACK_WINDOW_SECONDS)."""
    return timedelta(seconds=float(settings.PLINTH_ROLLBACK_WINDOW_SECONDS))


def preflight_timeout() -> timedelta:
    """How long a new revision may take to pass its pre-flight (PLINTH_PREFLIGHT_TIMEOUT_SECONDS)."""
    return timedelta(seconds=float(settings.PLINTH_PREFLIGHT_TIMEOUT_SECONDS))


# -- the pass ------------------------------------------------------------------------------------
def _reconcile(deployment: Deployment, backend: ServingBackend, done: Pass) -> None:
    done.target = _target_version(deployment)
    start = _follow(deployment, done.target, done) if isinstance(done.target, int) else None
    if start is not None:
        if not start.run_id:
            start.run_id = _run_id(deployment, start.version)
            Revision.objects.filter(pk=start.pk, run_id="").update(run_id=start.run_id)
        if _admit(deployment, backend, start, done):
            backend.start(start)
            done.did(f"started revision {start.number}")
    observed_at = timezone.now()
    probes: dict[int, Probe] = {}
    for revision in _revisions(deployment.pk, LIVE_REVISION_STATUSES):
        probe = backend.probe(revision)
        probes[revision.pk] = probe
        if revision.status == RevisionStatus.STARTING:
            probes[revision.pk] = _preflight(deployment, backend, revision, probe, done)
        elif probe.state in ("crashed", "gone", "failed"):  # "starting": a restart under way
            _restart(deployment, backend, revision, probe, observed_at, done)
        elif probe.endpoint and probe.endpoint != revision.endpoint:
            Revision.objects.filter(pk=revision.pk).update(endpoint=probe.endpoint)
    _canary_verdict(deployment, backend, done)
    _take_traffic(deployment, done)
    _retire_warm(deployment, backend, done)
    _stop_ended(backend, deployment.pk, done)
    # Not "starting": a revision whose server never answered yet is not taken out of a split.
    down = {pk for pk, probe in probes.items() if probe.state in ("crashed", "gone", "failed")}
    _apply_traffic(deployment, backend, down, done)
    with _locked(deployment.pk) as locked:
        if locked is not None:
            _update_status(locked, done.target)


def _target_version(deployment: Deployment) -> int | _Unknown | None:
    """The pinned version, else the version the alias points at in MLflow now (None: the
    alias is not set, or the model is gone); UNKNOWN when MLflow cannot be reached."""
    if deployment.pinned_version is not None:
        return int(deployment.pinned_version)
    try:
        return registry().get_alias(deployment.model_name, deployment.alias)
    except MlflowUnavailable as exc:
        logger.info("deployment %s: target unknown: %s", deployment.pk, exc.message)
        return UNKNOWN
    except MlflowError as exc:
        logger.warning("deployment %s: MLflow refused the alias read: %s", deployment.pk, exc.message)
        return UNKNOWN


def followed_version(deployment: Deployment) -> int | None:
    """The version the deployment last set out to serve: that of the revision of its latest
    `started` event (None before the first)."""
    found = (
        RolloutEvent.objects.filter(deployment_id=deployment.pk, step=RolloutStep.STARTED, revision__isnull=False)
        .order_by("-at", "-pk")
        .values_list("revision__version", flat=True)
        .first()
    )
    return int(found) if found is not None else None


def _follow(deployment: Deployment, target: int, done: Pass) -> Revision | None:
    """Under the lock: when `target` differs from the version followed, abandon any other
    rollout in flight and mark the revision that now rolls out (a new one, returned to be
    started outside the transaction; or a live one of that version)."""
    with _locked(deployment.pk) as locked:
        if locked is None or locked.status == DeploymentStatus.DELETING:
            return None
        revisions = list(locked.revisions.all())
        if followed_version(locked) == target and not _retry_due(locked, revisions, target):
            return None
        live = [r for r in revisions if r.status in LIVE_REVISION_STATUSES and r.version == target]
        source = "pinned version" if locked.pinned_version is not None else f"{locked.alias} now points at version"
        for other in revisions:
            if other.version == target or other.status not in LIVE_REVISION_STATUSES:
                continue
            if other.status == RevisionStatus.STARTING or (other.serving_at is None) or other.is_canary:
                _retire_now(other, f"superseded: {source} {target}")
                _event(locked, other, RolloutStep.RETIRED, f"Revision {other.number} superseded: {source} {target}.")
        chosen = next((r for r in live), None)
        if chosen is not None:
            _event(locked, chosen, RolloutStep.STARTED, f"{source} {target}: revision {chosen.number} is live already.")
            _audit(None, AuditVerb.DEPLOYMENT_ROLLOUT_STARTED, locked, chosen, reason=f"{source} {target}")
            _rebalance(locked)
            done.did(f"following version {target} with revision {chosen.number}")
            return None
        made = _new_revision(locked, target, "", None)  # its run id is read after the commit
        _event(locked, made, RolloutStep.STARTED, f"{source} {target}: revision {made.number} starts.")
        _audit(None, AuditVerb.DEPLOYMENT_ROLLOUT_STARTED, locked, made, reason=f"{source} {target}")
        _rebalance(locked)
        _update_status(locked, target)
        return made


def _retry_due(deployment: Deployment, revisions: list[Revision], target: int) -> bool:
    """The followed version failed (its pre-flight or its canary) and a person changed the
    deployment since (an input example given, a limit raised): it is tried once more."""
    if any(r.status in LIVE_REVISION_STATUSES and r.version == target for r in revisions):
        return False
    newest = next((r for r in revisions if r.version == target), None)  # ordered by -number
    return newest is not None and newest.status == RevisionStatus.FAILED and deployment.updated_at > newest.created_at


def _run_id(deployment: Deployment, version: int) -> str:
    """The version's source run, when MLflow tells (best effort: "" otherwise)."""
    try:
        found = registry().get_model_version(deployment.model_name, version)
    except (MlflowUnavailable, MlflowError):
        return ""
    return str((found or {}).get("run_id") or "")[:64]


def _new_revision(deployment: Deployment, version: int, run_id: str, actor: Any) -> Revision:
    number = (deployment.revisions.aggregate(top=Max("number"))["top"] or 0) + 1
    return Revision.objects.create(
        deployment=deployment,
        number=number,
        version=version,
        run_id=run_id,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )


# -- pre-flight ------------------------------------------------------------------------------
def _preflight(deployment: Deployment, backend: ServingBackend, revision: Revision, probe: Probe, done: Pass) -> Probe:
    """Move a starting revision on: start its server if none runs, fail it if it cannot come
    up or is past the deadline, else predict on the input example once it is up. Returns the
    latest probe of it."""
    late = timezone.now() - revision.created_at > preflight_timeout()
    seconds = int(preflight_timeout().total_seconds())
    if probe.state in ("failed", "crashed"):
        why = probe.message or f"the model server {'could not start' if probe.state == 'failed' else 'died'}"
        _fail_preflight(deployment, backend, revision, f"{why}{_log_tail(backend, revision)}", done)
        return probe
    if late and probe.state != "up":
        _fail_preflight(
            deployment,
            backend,
            revision,
            f"the model server did not come up within {seconds} s{_log_tail(backend, revision)}",
            done,
        )
        return probe
    if probe.state == "gone":
        if not _admit(deployment, backend, revision, done):
            return probe
        backend.start(revision)  # never started (a crash after the row was written), or lost
        done.did(f"started revision {revision.number}")
        probe = backend.probe(revision)
    if probe.state != "up":
        return probe
    try:
        body = input_example(deployment, revision.version)
        answer = backend.predict(revision, body)
    except NoInputExample as exc:
        _fail_preflight(deployment, backend, revision, exc.message, done)
        return probe
    except (MlflowUnavailable, ServingUnavailable) as exc:
        if late:
            _fail_preflight(deployment, backend, revision, f"no answer within {seconds} s: {exc.message}", done)
        return probe
    if not 200 <= answer.status < 300:
        text = answer.body[:1000].decode("utf-8", "replace")
        reason = f"the model answered {answer.status} on its input example: {text}{_log_tail(backend, revision)}"
        _fail_preflight(deployment, backend, revision, reason, done)
        return probe
    with _locked(deployment.pk) as locked:
        current = _fresh(revision)
        if locked is None or current is None or current.status != RevisionStatus.STARTING:
            return probe
        _set(current, status=RevisionStatus.READY, ready_at=timezone.now(), endpoint=probe.endpoint or current.endpoint)
        message = (
            f"Revision {current.number} (version {current.version}) answered {answer.status} on its input example "
            f"in {answer.latency_ms:.0f} ms."
        )
        _event(locked, current, RolloutStep.PREFLIGHT_PASSED, message)
        _audit(None, AuditVerb.DEPLOYMENT_PREFLIGHT_PASSED, locked, current, reason=message)
    done.did(f"pre-flight passed for revision {revision.number}")
    return probe


def _admit(deployment: Deployment, backend: ServingBackend, revision: Revision, done: Pass) -> bool:
    """Before a starting revision's model server is started (outside transactions): the
    environment it serves in (resolved once and stored on the revision), then the model's
    own requirements against that environment. Returns whether the server may start now.

    A refusal by the environment rules (building, failed, retired) or an unmet
    requirement fails the pre-flight with the sentence (every package named): no server
    is started, no traffic ever reaches it. MLflow down: not now (the next pass tries
    again; past the pre-flight deadline the revision fails, as a prediction would)."""
    late = timezone.now() - revision.created_at > preflight_timeout()
    try:
        env = _environment_of(deployment, revision, done)
        if env is None:
            return False
        problems = serving_environment.unmet_requirements(
            env, serving_environment.model_requirements(deployment.model_name, revision.version), backend=backend.name
        )
    except (Conflict, InvalidInput) as exc:  # the environment rules refused it
        _fail_preflight(deployment, backend, revision, exc.message, done)
        return False
    except MlflowUnavailable as exc:
        if late:
            seconds = int(preflight_timeout().total_seconds())
            _fail_preflight(deployment, backend, revision, f"no answer within {seconds} s: {exc.message}", done)
        else:
            done.did(f"revision {revision.number} waits for MLflow ({exc.message})")
        return False
    if problems:
        _fail_preflight(deployment, backend, revision, serving_environment.unmet_sentence(env, problems), done)
        return False
    return True


def _environment_of(deployment: Deployment, revision: Revision, done: Pass) -> Environment | None:
    """The revision's environment: the stored one, else resolved now and stored (the
    page shows it on the revision; a deprecation warning goes to the pass's log — no
    rollout event, as the `started` ones decide which version is followed). None when
    the revision is no longer starting."""
    if revision.environment_id is not None:
        env = Environment.objects.select_related("build", "team").filter(pk=revision.environment_id).first()
        if env is not None:
            return env
    chosen = serving_environment.resolve(deployment, revision)
    env = chosen.environment
    with _locked(deployment.pk) as locked:
        current = _fresh(revision)
        if locked is None or current is None or current.status != RevisionStatus.STARTING:
            return None
        if current.environment_id is not None and current.environment_id != env.pk:  # another pass chose first
            return Environment.objects.select_related("build", "team").filter(pk=current.environment_id).first()
        _set(current, environment=env)
        revision.environment = env
    warnings = " ".join(chosen.warnings)
    done.did(f"revision {revision.number} serves in {env.label}{' (' + warnings + ')' if warnings else ''}")
    return env


def _fail_preflight(deployment: Deployment, backend: ServingBackend, revision: Revision, why: str, done: Pass) -> None:
    reason = f"pre-flight failed: {why}"[:REASON_LIMIT]
    with _locked(deployment.pk) as locked:
        current = _fresh(revision)
        if locked is None or current is None or current.status != RevisionStatus.STARTING:
            return
        _set(current, status=RevisionStatus.FAILED, reason=reason, traffic=0, is_canary=False)
        _event(locked, current, RolloutStep.PREFLIGHT_FAILED, reason)
        _audit(None, AuditVerb.DEPLOYMENT_PREFLIGHT_FAILED, locked, current, reason=reason, step="preflight_failed")
        notices.preflight_failed(locked, current, reason)
    done.did(f"pre-flight failed for revision {revision.number}")
    _stop(backend, revision)


def _log_tail(backend: ServingBackend, revision: Revision) -> str:
    try:
        text = backend.logs(revision, tail=LOG_TAIL).strip()
    except ServingUnavailable:
        return ""
    return f"\n--- model server log (last lines) ---\n{text}" if text else ""


# -- crashes -----------------------------------------------------------------------------------
def _restart(
    deployment: Deployment,
    backend: ServingBackend,
    revision: Revision,
    probe: Probe,
    observed_at: datetime,
    done: Pass,
) -> None:
    """A ready or serving revision whose model server is not up: count a restart (unless
    another pass just did, after this one looked) and start it again."""
    with _locked(deployment.pk) as locked:
        current = _fresh(revision)
        if locked is None or current is None or current.status not in (RevisionStatus.READY, RevisionStatus.SERVING):
            return
        if current.events.filter(step=RolloutStep.RESTARTED, at__gte=observed_at).exists():
            return
        Revision.objects.filter(pk=current.pk).update(restarts=F("restarts") + 1)
        current.refresh_from_db(fields=["restarts"])
        what = probe.message or {"gone": "no model server runs"}.get(probe.state, f"the model server {probe.state}")
        _event(
            locked,
            current,
            RolloutStep.RESTARTED,
            f"Revision {current.number}: {what}; started again (restart {current.restarts}).",
        )
    backend.start(revision)
    done.did(f"restarted revision {revision.number}")


# -- traffic decisions ---------------------------------------------------------------------------
def _canary_verdict(deployment: Deployment, backend: ServingBackend, done: Pass) -> None:
    """A canary past its minutes: promote it, or roll it back with the numbers."""
    serving = _revisions(deployment.pk, [RevisionStatus.SERVING])
    canary = next((r for r in serving if r.is_canary), None)
    stable = _stable(serving)
    if canary is None or canary.canary_started_at is None:
        return
    started = canary.canary_started_at
    if timezone.now() - started < timedelta(minutes=float(deployment.canary_minutes)):
        return
    shown = [canary, stable] if stable is not None else [canary]
    seen = backend.metrics(shown, since=started)
    canary_m = seen.get(canary.pk) or RevisionMetrics(revision_id=canary.pk)
    stable_m = seen.get(stable.pk) if stable is not None else None
    healthy, rule = verdict(deployment, canary_m, stable_m)
    with _locked(deployment.pk) as locked:
        current = _fresh(canary)
        if locked is None or current is None or not current.is_canary or current.canary_started_at != started:
            return
        current_stable = _stable(_revisions(locked.pk, [RevisionStatus.SERVING]))
        if healthy:
            _take_all(current)
            _event(locked, current, RolloutStep.PROMOTED, f"Revision {current.number} takes 100 %: {rule}")
            _audit(None, AuditVerb.DEPLOYMENT_PROMOTED, locked, current, reason=rule)
            done.did(f"promoted revision {current.number}")
            return
        _set(current, status=RevisionStatus.FAILED, traffic=0, is_canary=False, reason=f"rolled back: {rule}")
        if current_stable is not None:
            _set(current_stable, traffic=100)
        _event(locked, current, RolloutStep.ROLLED_BACK, f"Revision {current.number} rolled back: {rule}")
        _audit(None, AuditVerb.DEPLOYMENT_ROLLED_BACK, locked, current, reason=rule, step="canary")
        notices.rolled_back(locked, current, rule)
        done.did(f"rolled back revision {current.number}")


def verdict(deployment: Deployment, canary: RevisionMetrics, stable: RevisionMetrics | None) -> tuple[bool, str]:
    """(promote?, the rule in words) for a canary's requests against the deployment's
    limits: 5xx rate above `max_error_rate` or p95 above `max_p95_ms` rolls it back. No
    requests during the canary promotes it, saying so. The stable revision's numbers are
    quoted beside the canary's."""
    if not canary.requests:
        return (
            True,
            f"no requests reached the canary in its {deployment.canary_minutes:g} min; promoted on its pre-flight",
        )
    rate = canary.error_rate or 0.0
    stable_rate = _rate(stable)
    stable_p95 = f"{stable.p95_ms:.0f} ms" if stable is not None and stable.p95_ms is not None else "no requests"
    problems: list[str] = []
    if rate > deployment.max_error_rate:
        problems.append(
            f"canary 5xx rate {rate:.2f} ({canary.errors_5xx} of {canary.requests}) > limit "
            f"{deployment.max_error_rate:.2f}; stable {stable_rate}"
        )
    if canary.p95_ms is not None and canary.p95_ms > deployment.max_p95_ms:
        problems.append(f"canary p95 {canary.p95_ms:.0f} ms > limit {deployment.max_p95_ms} ms; stable {stable_p95}")
    if problems:
        return False, ". ".join(problems)
    p95 = f"{canary.p95_ms:.0f} ms" if canary.p95_ms is not None else "n/a"
    return True, (
        f"canary 5xx rate {rate:.2f} ({canary.errors_5xx} of {canary.requests}) "
        f"≤ limit {deployment.max_error_rate:.2f}, "
        f"p95 {p95} ≤ limit {deployment.max_p95_ms} ms; stable {stable_rate}, p95 {stable_p95}"
    )


def _rate(metrics: RevisionMetrics | None) -> str:
    if metrics is None or not metrics.requests:
        return "no requests"
    return f"{metrics.error_rate or 0.0:.2f} ({metrics.errors_5xx} of {metrics.requests})"


def _take_traffic(deployment: Deployment, done: Pass) -> None:
    """Under the lock: a ready rollback revision takes 100 %; a ready revision of the
    followed version takes 100 % when nothing serves or the canary is 0 %, else the canary
    share."""
    with _locked(deployment.pk) as locked:
        if locked is None or locked.status == DeploymentStatus.DELETING:
            return
        revisions = list(locked.revisions.all())
        ready = [r for r in revisions if r.status == RevisionStatus.READY and r.serving_at is None]
        serving = [r for r in revisions if r.status == RevisionStatus.SERVING]
        back = next((r for r in ready if _is_rollback(r)), None)
        if back is not None:
            for other in serving:
                _retire_now(other, f"replaced by revision {back.number} (rollback to version {back.version})")
            _take_all(back)
            message = (
                f"Revision {back.number} (version {back.version}) passed its pre-flight and takes 100 % (rollback)."
            )
            _event(locked, back, RolloutStep.PROMOTED, message)
            _audit(None, AuditVerb.DEPLOYMENT_PROMOTED, locked, back, reason=message)
            done.did(f"rollback revision {back.number} serves")
            return
        followed = followed_version(locked)
        candidate = next((r for r in revisions if r.status == RevisionStatus.READY and r.version == followed), None)
        if candidate is not None and _superseded(candidate, serving):
            candidate = None  # warm, a newer revision of its version serves (a redeploy)
        if candidate is None or any(r.is_canary for r in serving):
            return
        stable = _stable(serving)
        if stable is None or locked.canary_percent == 0:
            why = "nothing served before" if stable is None else "the canary share is 0 %"
            _take_all(candidate)
            _event(locked, candidate, RolloutStep.PROMOTED, f"Revision {candidate.number} takes 100 %: {why}.")
            _audit(None, AuditVerb.DEPLOYMENT_PROMOTED, locked, candidate, reason=why)
            done.did(f"promoted revision {candidate.number}")
            return
        share = int(locked.canary_percent)
        _set(
            candidate,
            status=RevisionStatus.SERVING,
            is_canary=True,
            traffic=share,
            canary_started_at=timezone.now(),
        )
        _set(stable, traffic=100 - share)
        message = (
            f"Revision {candidate.number} (version {candidate.version}) takes {share} % for "
            f"{locked.canary_minutes:g} min; revision {stable.number} keeps {100 - share} %."
        )
        _event(locked, candidate, RolloutStep.CANARY, message)
        _audit(
            None,
            AuditVerb.DEPLOYMENT_CANARY_STARTED,
            locked,
            candidate,
            reason=message,
            stable=stable.number,
            share=share,
        )
        done.did(f"canary for revision {candidate.number}")


def _take_all(revision: Revision) -> None:
    """Inside the lock: `revision` serves 100 %; every other serving revision of its
    deployment leaves the traffic and stays warm (ready, 0 %) for the rollback window."""
    now = timezone.now()
    for other in Revision.objects.filter(deployment_id=revision.deployment_id, status=RevisionStatus.SERVING).exclude(
        pk=revision.pk
    ):
        _set(other, status=RevisionStatus.READY, traffic=0, is_canary=False, ready_at=now)
    _set(revision, status=RevisionStatus.SERVING, traffic=100, is_canary=False, serving_at=now)


def _rebalance(deployment: Deployment) -> None:
    """Inside the lock: the serving revisions' shares sum to 100 again after one left."""
    serving = list(deployment.revisions.filter(status=RevisionStatus.SERVING))
    if not serving or sum(r.traffic for r in serving) == 100:
        return
    canary = next((r for r in serving if r.is_canary), None)
    stable = _stable(serving)
    if canary is not None and stable is not None:
        _set(canary, traffic=int(deployment.canary_percent))
        _set(stable, traffic=100 - int(deployment.canary_percent))
    else:
        keep = stable or serving[0]
        for other in serving:
            _set(other, traffic=100 if other.pk == keep.pk else 0)


def _apply_traffic(deployment: Deployment, backend: ServingBackend, down: set[int], done: Pass) -> None:
    """Write the effective split (a serving revision whose model server is down gives its
    share to one that is up, until it is back) and hand it to the backend."""
    with _locked(deployment.pk) as locked:
        if locked is None or locked.status == DeploymentStatus.DELETING:
            return
        serving = list(locked.revisions.filter(status=RevisionStatus.SERVING))
        if not serving:
            return
        wanted = _wanted_split(locked, serving)
        up = [r for r in serving if r.pk not in down]
        if up and len(up) < len(serving):
            moved = sum(wanted[r.pk] for r in serving if r.pk in down)
            keep = max(up, key=lambda r: wanted[r.pk])
            wanted = {r.pk: 0 for r in serving if r.pk in down} | {
                r.pk: wanted[r.pk] + (moved if r.pk == keep.pk else 0) for r in up
            }
        changed = False
        for revision in serving:
            if revision.traffic != wanted[revision.pk]:
                _set(revision, traffic=wanted[revision.pk])
                changed = True
        split = {r.pk: wanted[r.pk] for r in serving}
    if changed:
        done.did("traffic " + ", ".join(f"{pk}:{share}" for pk, share in sorted(split.items())))
    try:
        backend.set_traffic(locked, split)
    except (Conflict, InvalidInput) as exc:  # a split this backend cannot express (yet): said, retried
        logger.warning("deployment %s: the backend refused the split %s: %s", deployment.pk, split, exc.message)
        done.did(f"the backend refused the split ({exc.message})")


def _wanted_split(deployment: Deployment, serving: list[Revision]) -> dict[int, int]:
    """The split the state asks for: canary share / the rest during a canary, else 100 %
    on the stable revision."""
    canary = next((r for r in serving if r.is_canary), None)
    stable = _stable(serving)
    if canary is not None and stable is not None:
        share = int(deployment.canary_percent)
        return {r.pk: share if r.pk == canary.pk else (100 - share if r.pk == stable.pk else 0) for r in serving}
    keep = stable or serving[0]
    return {r.pk: 100 if r.pk == keep.pk else 0 for r in serving}


# -- retiring and stopping -----------------------------------------------------------------------
def _retire_warm(deployment: Deployment, backend: ServingBackend, done: Pass) -> None:
    """Warm revisions (ready, 0 %, served before) past the rollback window are retired."""
    cutoff = timezone.now() - rollback_window()
    with _locked(deployment.pk) as locked:
        if locked is None:
            return
        followed = followed_version(locked)
        serving = list(locked.revisions.filter(status=RevisionStatus.SERVING))
        due = [
            r
            for r in locked.revisions.filter(
                status=RevisionStatus.READY, traffic=0, serving_at__isnull=False, ready_at__lt=cutoff
            )
            if r.version != followed or _superseded(r, serving)
        ]
        for revision in due:
            minutes = rollback_window().total_seconds() / 60
            _retire_now(revision, f"kept warm {minutes:g} min after leaving the traffic")
            _event(
                locked, revision, RolloutStep.RETIRED, f"Revision {revision.number} retired after {minutes:g} min warm."
            )
            done.did(f"retired revision {revision.number}")


def _stop_ended(backend: ServingBackend, deployment_pk: int, done: Pass) -> None:
    """Stop the model servers of failed and retired revisions not stopped yet (`retired_at`
    records the stop): a pass that died between the decision and the stop is repaired."""
    for revision in _revisions(deployment_pk, [RevisionStatus.FAILED, RevisionStatus.RETIRED]).filter(
        retired_at__isnull=True
    ):
        _stop(backend, revision)
        done.did(f"stopped revision {revision.number}")


def _stop(backend: ServingBackend, revision: Revision) -> None:
    backend.stop(revision)
    Revision.objects.filter(pk=revision.pk, retired_at__isnull=True).update(retired_at=timezone.now())


def _retire_now(revision: Revision, reason: str) -> None:
    """Inside the lock: the revision leaves for good (its server is stopped after commit)."""
    _set(revision, status=RevisionStatus.RETIRED, traffic=0, is_canary=False, reason=reason[:REASON_LIMIT])


# -- deletion ---------------------------------------------------------------------------------
def _delete(deployment: Deployment, backend: ServingBackend) -> str:
    """A deployment being deleted: remove what the backend runs, then the row (with its
    revisions, events, keys and stats)."""
    try:
        backend.delete(deployment)
    except ServingUnavailable as exc:
        logger.warning("deployment %s: delete waits for the backend: %s", deployment.pk, exc.message)
        return "delete: serving backend unavailable"
    Deployment.objects.filter(pk=deployment.pk, status=DeploymentStatus.DELETING).delete()
    return "deleted"


# -- status -------------------------------------------------------------------------------------
def _update_status(deployment: Deployment, target: int | _Unknown | None = UNKNOWN) -> None:
    """Inside the lock: the deployment's status from its revisions (starting, serving,
    rolling out, failed), with a reason where it helps."""
    if deployment.status == DeploymentStatus.DELETING:
        return
    revisions = list(deployment.revisions.all())
    serving = [r for r in revisions if r.status == RevisionStatus.SERVING]
    in_flight = any(
        r.status == RevisionStatus.STARTING
        or r.is_canary
        or (r.status == RevisionStatus.READY and r.serving_at is None)
        for r in revisions
    )
    newest = revisions[0] if revisions else None  # ordered by -number
    reason = ""
    if serving:
        status = DeploymentStatus.ROLLING_OUT if in_flight else DeploymentStatus.SERVING
    elif newest is not None and newest.status == RevisionStatus.FAILED:
        status, reason = DeploymentStatus.FAILED, newest.reason
    else:
        status = DeploymentStatus.STARTING
        if target is None and deployment.pinned_version is None and newest is None:
            reason = f"{deployment.alias} does not point at any version of {deployment.model_name} in MLflow."
        elif isinstance(target, _Unknown) and newest is None:
            reason = "MLflow is unreachable: the version to serve is not known yet."
    if (deployment.status, deployment.status_reason) != (status, reason):
        Deployment.objects.filter(pk=deployment.pk).exclude(status=DeploymentStatus.DELETING).update(
            status=status, status_reason=reason[:REASON_LIMIT]
        )
        deployment.status, deployment.status_reason = status, reason


# -- small helpers -------------------------------------------------------------------------------
def _load(pk: int) -> Deployment | None:
    return Deployment.objects.select_related("project__team", "created_by").filter(pk=pk).first()


@contextmanager
def _locked(pk: int) -> Iterator[Deployment | None]:
    """A short transaction holding the deployment's row lock; yields None when it is gone."""
    with transaction.atomic():
        yield (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("project__team", "created_by")
            .filter(pk=pk)
            .first()
        )


def _revisions(deployment_pk: int, statuses: Any) -> Any:
    return Revision.objects.filter(deployment_id=deployment_pk, status__in=list(statuses)).order_by("-number")


def _fresh(revision: Revision) -> Revision | None:
    return Revision.objects.filter(pk=revision.pk).first()


def _stable(serving: list[Revision]) -> Revision | None:
    """The serving revision that is not the canary (the newest, should there be several)."""
    plain = sorted((r for r in serving if not r.is_canary), key=lambda r: -r.number)
    return plain[0] if plain else None


def _superseded(revision: Revision, serving: list[Revision]) -> bool:
    """A newer revision of the same version serves (a redeploy, e.g. in another
    environment): `revision` is only a warm fallback."""
    return any(s.version == revision.version and s.number > revision.number for s in serving)


def redeploy(deployment: Deployment, actor: Any, why: str) -> Revision | None:
    """Inside the caller's transaction, with `deployment` locked: a new revision of the
    version now followed, when one is live (its settings changed in a way only a new model
    server applies: its environment). The revisions of that version not serving yet are
    retired; the serving one serves until the new one passes its pre-flight and its
    canary, as any rollout. None when nothing of the followed version is live (the next
    revision gets the new settings anyway). On the timeline and audited."""
    followed = followed_version(deployment)
    revisions = list(deployment.revisions.all())
    live = [r for r in revisions if r.status in LIVE_REVISION_STATUSES and r.version == followed]
    if followed is None or not live:
        return None
    who = _name(actor)
    for other in live:
        if other.status == RevisionStatus.STARTING or (
            other.status == RevisionStatus.READY and other.serving_at is None
        ):
            _retire_now(other, f"superseded: {why}")
            _event(deployment, other, RolloutStep.RETIRED, f"Revision {other.number} superseded: {why}.", actor=actor)
    run_id = next((r.run_id for r in live if r.run_id), "")
    made = _new_revision(deployment, followed, run_id, actor)
    message = f"{who}: {why}; revision {made.number} (version {followed}) starts."
    _event(deployment, made, RolloutStep.STARTED, message, actor=actor)
    _audit(actor, AuditVerb.DEPLOYMENT_ROLLOUT_STARTED, deployment, made, reason=why)
    _rebalance(deployment)
    _update_status(deployment)
    enqueue_reconcile(deployment.pk)
    return made


def _is_rollback(revision: Revision) -> bool:
    """A revision started by a manual rollback (marked by its `rolled_back` event by a person)."""
    return revision.events.filter(step=RolloutStep.ROLLED_BACK, actor__isnull=False).exists()


def _set(revision: Revision, **fields: Any) -> None:
    Revision.objects.filter(pk=revision.pk).update(**fields)
    for key, value in fields.items():
        setattr(revision, key, value)


def _event(deployment: Deployment, revision: Revision | None, step: str, message: str, actor: Any = None) -> None:
    RolloutEvent.objects.create(
        deployment=deployment,
        revision=revision,
        step=step,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        message=message[:REASON_LIMIT],
    )


def _audit(actor: Any, verb: AuditVerb, deployment: Deployment, revision: Revision, **after: Any) -> None:
    record(
        actor,
        verb,
        deployment,
        team=deployment.project.team,
        project=deployment.project,
        after={"revision": revision.number, "version": revision.version, "status": revision.status, **after},
    )


def _name(actor: Any) -> str:
    return str(actor.get_username()) if getattr(actor, "is_authenticated", False) else "the system"
