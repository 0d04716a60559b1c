"""Launch and sweep pages: list, launch form, live detail with log tail, cancel."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.access.lookups import get_launch_for_user, get_project_for_user, get_sweep_for_user
from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.compute.registry import get_backend
from apps.core.errors import ServiceError
from apps.core.filters import FilteredListMixin
from apps.core.numbers import best as best_of
from apps.core.pages import paginate, run_action, run_service
from apps.core.partials import FragmentMixin, fragment_for
from apps.launches import services, sweeps
from apps.launches.filters import LaunchFilter, SweepFilter
from apps.launches.forms import LaunchForm, SweepForm
from apps.launches.lookups import find_template, visible_project
from apps.launches.models import LIVE, TERMINAL, Launch, Status, Sweep, SweepStatus, Template
from apps.launches.serializers import sweep_progress
from apps.projects.models import Project
from apps.tracking.gateway import MlflowUnavailable, gateway

LOG_TAIL = 200


def _launchable_projects(request: HttpRequest, template: Template) -> list[Project]:
    projects = (
        Project.objects.for_user(request.user, Action.LAUNCH).select_related("team").order_by("team__slug", "slug")
    )
    return [p for p in projects if p.backend in template.backends and (template.team_id in (None, p.team_id))]


def _host_gpus(projects: list[Project]) -> int | None:
    """The local host's GPU count when every project offered runs on the local backend (the
    launch form caps its GPU field by it), else None."""
    if not projects or any(p.backend != "local" for p in projects):
        return None
    return len(get_backend("local").inventory())


def _environments(request: HttpRequest, template: Template, projects: list[Project]) -> list[Any]:
    """The environments a launch of `template` may ask for: those usable in every team of
    the projects offered (platform-wide ones, and a team's own when one team is offered)."""
    from apps.projects.services import environment_choices

    teams = {p.team_id: p.team for p in projects}
    if not teams:
        return []
    found = [environment_choices(request.user, team) for team in teams.values()]
    common = set.intersection(*({env.pk for env in envs} for envs in found))
    return [env for env in found[0] if env.pk in common]


def _deleted_experiments(projects: list[Project]) -> list[tuple[Project, str]]:
    """The projects (of those offered) whose MLflow experiment was deleted in MLflow, each
    with the sentence that says how to fix it (a launch there answers 409 with it)."""
    from apps.projects.models import ExperimentState
    from apps.projects.services import experiment_deleted_sentence

    return [(p, experiment_deleted_sentence(p)) for p in projects if p.mlflow_state == ExperimentState.DELETED]


def _check_project(request: HttpRequest) -> None:
    """404/403 for a posted project the user may not see/launch in, as the API answers
    (the form's choices would only say "not a valid choice")."""
    value = request.POST.get("project", "")
    if value.isdigit():
        get_project_for_user(request.user, value, Action.LAUNCH)


class LaunchListView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    template_name = "launches/list.html"
    filterset_class = LaunchFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        launches = Launch.objects.for_user(user).select_related(
            "project__team", "template", "created_by", "environment__team"
        )
        context.update(
            page=paginate(self.request, self.filtered(launches).order_by("-created_at", "-id")),
            templates=Template.objects.for_user(user).filter(is_active=True).select_related("team").order_by("slug"),
            can_launch=Project.objects.for_user(user, Action.LAUNCH).exists(),
        )
        return context


class LaunchCreateView(LoginRequiredMixin, View):
    """GET without a template: pick one. With ?template=: the generated form (prefilled from
    ?from=<launch> for "Launch again with changes"). POST: create."""

    def _template(self, request: HttpRequest) -> Template | None:
        # Resolved as the API resolves it: a slug means the project's team's template first,
        # then the global one; without a project, only a slug that names one template.
        value = request.POST.get("template") or request.GET.get("template") or ""
        project = visible_project(request.user, request.POST.get("project") or request.GET.get("project"))
        return find_template(request.user, value, project)

    def get(self, request: HttpRequest) -> HttpResponse:
        template = self._template(request)
        if template is None:
            templates = Template.objects.for_user(request.user).filter(is_active=True).select_related("team")
            return render(request, "launches/pick_template.html", {"templates": templates.order_by("slug")})
        projects = _launchable_projects(request, template)
        initial: dict[str, Any] = {}
        source = request.GET.get("from", "")
        if source.isdigit():
            previous = get_launch_for_user(request.user, source, Action.VIEW)
            initial = {
                "project": str(previous.project_id),
                "name": previous.name,
                **{f"param_{k}": v for k, v in previous.parameters.items()},
                **{k: previous.resources.get(k) for k in ("cpu", "memory", "gpus", "gpu_product")},
                "environment": str(previous.environment_id or ""),
            }
        elif request.GET.get("project"):
            initial["project"] = request.GET["project"]
        form = LaunchForm(
            template=template,
            projects=projects,
            initial=initial,
            host_gpus=_host_gpus(projects),
            environments=_environments(request, template, projects),
        )
        return render(
            request,
            "launches/form.html",
            {"form": form, "template": template, "projects": projects, "deleted": _deleted_experiments(projects)},
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        template = self._template(request)
        if template is None:
            messages.error(request, "Choose a template first.")
            return redirect("launches:create")
        _check_project(request)
        projects = _launchable_projects(request, template)
        form = LaunchForm(
            request.POST,
            template=template,
            projects=projects,
            host_gpus=_host_gpus(projects),
            environments=_environments(request, template, projects),
        )
        status = 400
        if form.is_valid():
            project = next(p for p in projects if str(p.pk) == form.cleaned_data["project"])
            launch, status = run_service(
                form,
                lambda: services.create_launch(
                    actor_of(request),
                    project,
                    template,
                    parameters=form.parameters(),
                    resources=form.resources(),
                    name=form.cleaned_data["name"],
                    environment=form.cleaned_data.get("environment") or None,
                ),
                field_for=form.service_field,
            )
            if launch is not None:
                for warning in launch.environment_warnings:
                    messages.warning(request, warning)
                messages.success(request, f"Launched {launch.job_name}; it starts in a moment.")
                return redirect("launches:detail", pk=launch.pk)
        return render(
            request,
            "launches/form.html",
            {"form": form, "template": template, "projects": projects, "deleted": _deleted_experiments(projects)},
            status=status,
        )


class LaunchDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """Live status, actions and log tail: the status fragment polls, and its answer carries
    the actions and the log out of band, so all three show the same moment; the answer
    after the launch ended is the last (286)."""

    template_name = "launches/detail.html"
    lookup = get_launch_for_user
    lookup_kwargs = ("pk",)
    fragments = ("status",)

    def finished(self) -> bool:
        return self.object.status in TERMINAL

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        launch: Launch = self.object
        try:
            logs = get_backend(launch.backend).logs(launch, LOG_TAIL)
            logs_error = ""
        except ServiceError as exc:
            logs, logs_error = "", exc.message
        user = self.request.user
        context.update(
            launch=launch,
            logs=logs,
            logs_error=logs_error,
            live=launch.status not in TERMINAL,
            # The polled status carries the actions and the log out of band.
            oob=fragment_for(self.request, self.fragments) is not None,
            can_cancel=launch.status not in TERMINAL
            and launch.status != Status.CANCELLING
            and policies.can_manage_run(user, launch),
            can_relaunch=policies.can(user, Action.LAUNCH, launch.project.team),
            mlflow_url=gateway().run_url(launch.mlflow_experiment_id, launch.mlflow_run_id)
            if launch.mlflow_run_id
            else "",
            timeline=[
                ("created", launch.created_at),
                ("submitted", launch.submitted_at),
                ("started", launch.started_at),
                ("finished", launch.finished_at),
            ],
        )
        return context


class LaunchCancelView(ObjectAccessMixin, View):
    lookup = get_launch_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        return run_action(
            request,
            lambda: services.cancel_launch(actor_of(request), self.object),
            success=f"Cancelling {self.object.job_name}.",
            then=reverse("launches:detail", kwargs={"pk": pk}),
        )


class SweepListView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    template_name = "launches/sweep_list.html"
    filterset_class = SweepFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        found = Sweep.objects.for_user(self.request.user).select_related("project__team", "template", "created_by")
        context.update(
            page=paginate(self.request, self.filtered(found).order_by("-created_at", "-id")),
            can_launch=Project.objects.for_user(self.request.user, Action.LAUNCH).exists(),
        )
        return context


def _sweep_form_field(key: str) -> str:
    """The sweep form's field for a service error key ("space.lr" -> "space",
    "early_stopping.min_steps" -> "min_steps")."""
    if key.startswith("space"):
        return "space"
    if key == "early_stopping.min_steps":
        return "min_steps"
    return "early_stopping" if key.startswith("early_stopping") else key


class SweepCreateView(LoginRequiredMixin, View):
    template_name = "launches/sweep_form.html"

    def _template(self, request: HttpRequest) -> Template | None:
        return LaunchCreateView._template(self, request)  # type: ignore[arg-type]

    def get(self, request: HttpRequest) -> HttpResponse:
        template = self._template(request)
        if template is None:
            templates = Template.objects.for_user(request.user).filter(is_active=True).select_related("team")
            return render(
                request, "launches/pick_template.html", {"templates": templates.order_by("slug"), "for_sweep": True}
            )
        projects = _launchable_projects(request, template)
        form = SweepForm(projects=projects, objective=template.objective)
        return render(
            request,
            self.template_name,
            {"form": form, "template": template, "deleted": _deleted_experiments(projects)},
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        template = self._template(request)
        if template is None:
            return redirect("launches:sweep-create")
        _check_project(request)
        projects = _launchable_projects(request, template)
        form = SweepForm(request.POST, projects=projects, objective=template.objective)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                space = json.loads(data["space"])
            except ValueError as exc:
                form.add_error("space", f"Not valid JSON: {exc}")
            else:
                project = next(p for p in projects if str(p.pk) == data["project"])
                sweep, status = run_service(
                    form,
                    lambda: sweeps.create_sweep(
                        actor_of(request),
                        project,
                        template,
                        strategy=data["strategy"],
                        space=space,
                        max_trials=data["max_trials"],
                        parallelism=data["parallelism"],
                        metric=data["metric"],
                        direction=data["direction"],
                        name=data["name"],
                        early_stopping=form.early_stopping_spec(),
                        seed=data["seed"],
                    ),
                    field_for=_sweep_form_field,
                )
                if sweep is not None:
                    messages.success(
                        request, f"Sweep started: {sweep.max_trials} trials, {sweep.parallelism} at a time."
                    )
                    if warning := form.metric_warning():
                        messages.warning(request, warning)
                    return redirect("launches:sweep-detail", pk=sweep.pk)
        return render(
            request,
            self.template_name,
            {"form": form, "template": template, "deleted": _deleted_experiments(projects)},
            status=status,
        )


class SweepDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """A sweep's one live region: status, progress, best value, chart, trials and the
    cancel action in one fragment, polled while the sweep runs; the answer after it ended
    is the last (286) and shows every trial and the chart."""

    template_name = "launches/sweep_detail.html"
    lookup = get_sweep_for_user
    lookup_kwargs = ("pk",)
    fragments = ("sweep",)

    live = True

    def finished(self) -> bool:
        return not self.live

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from apps.launches.charts import sweep_figure, trial_metrics
        from apps.launches.insights import history_figure, importance_figure, sweep_insights

        context = super().get_context_data(**kwargs)
        sweep: Sweep = self.object
        trials = list(sweep.trials.select_related("created_by").order_by("id"))
        metrics, mlflow_error = {}, ""
        try:
            metrics = trial_metrics(sweep, trials)
        except MlflowUnavailable as exc:
            mlflow_error = exc.message
        # Best so far: finite values only (NaN, ±inf and MLflow's ±1.797e308 never win).
        # A pruned trial's value is from the middle of its run: never the best.
        scored = [
            (t, metrics[t.pk][sweep.metric])
            for t in trials
            if sweep.metric and sweep.metric in metrics.get(t.pk, {}) and t.status != Status.PRUNED
        ]
        found = best_of(scored, sweep.direction)
        best = (found[1], found[0]) if found is not None else None
        progress = sweep_progress(sweep, trials)
        # Live until the sweep ended and so did its last trial (a cancelled sweep's trials
        # are still being stopped for a moment), and MLflow answered for the final metrics.
        self.live = sweep.status == SweepStatus.RUNNING or progress["running"] > 0 or bool(mlflow_error)
        insights = sweep_insights(sweep, trials, metrics, running=progress["running"])
        user = self.request.user
        context.update(
            live=self.live,
            sweep=sweep,
            insights=insights,
            history_figure=history_figure(sweep, insights.history),
            importance_figure=importance_figure(insights.importances),
            trials=trials,
            metrics=metrics,
            mlflow_error=mlflow_error,
            best=best,
            progress=progress,
            percent=int(100 * progress["done"] / max(progress["planned"], 1)),
            figure=sweep_figure(sweep, trials, metrics),
            can_cancel=sweep.status == SweepStatus.RUNNING and policies.can_manage_run(user, sweep),
            # Not while trials of an ended sweep are still being stopped (extend_sweep: 409).
            can_extend=sweep.status != SweepStatus.RUNNING
            and not any(t.status in LIVE for t in trials)
            and policies.can(user, Action.LAUNCH, sweep.project.team)
            and policies.can_manage_run(user, sweep),
        )
        return context


class SweepCancelView(ObjectAccessMixin, View):
    lookup = get_sweep_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        return run_action(
            request,
            lambda: sweeps.cancel_sweep(actor_of(request), self.object),
            success="Sweep cancelled; its running trials are being stopped.",
            then=reverse("launches:sweep-detail", kwargs={"pk": pk}),
        )


class SweepExtendView(ObjectAccessMixin, View):
    """POST `trials`: run that many more trials of an ended sweep (sweeps.extend_sweep),
    then back to the sweep's page (post/redirect/get); a refusal is its error page."""

    lookup = get_sweep_for_user
    lookup_kwargs = ("pk",)
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        raw = request.POST.get("trials", "").strip()
        # ASCII digits only ("²" is a digit to str.isdigit, not to int), and few of them (int()
        # refuses thousands): anything else goes to the service as it is, for its 400.
        trials: Any = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else raw
        return run_action(
            request,
            lambda: sweeps.extend_sweep(actor_of(request), self.object, trials),
            success=lambda sweep: f"Sweep extended: {sweep.max_trials} trials in all.",
            then=reverse("launches:sweep-detail", kwargs={"pk": pk}),
        )
