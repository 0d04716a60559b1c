"""Project pages: list, create, detail (quota, backend, namespace, MLflow link), edit."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import TemplateView

from apps.access import policies
from apps.access.lookups import get_project_by_slug_for_user
from apps.access.mixins import ObjectAccessMixin
from apps.access.policies import actor_of
from apps.access.roles import Action
from apps.accounts.models import Team
from apps.core.filters import FilteredListMixin
from apps.core.pages import paginate, run_service
from apps.core.partials import FragmentMixin, fragment_for
from apps.projects import services
from apps.projects.filters import ProjectFilter
from apps.projects.forms import ExperimentAttachForm, ExperimentReplaceForm, ProjectCreateForm, ProjectEditForm
from apps.projects.models import ExperimentState, Project
from apps.tracking.gateway import gateway


class ProjectListView(LoginRequiredMixin, FilteredListMixin, TemplateView):
    template_name = "projects/list.html"
    filterset_class = ProjectFilter

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        projects = Project.objects.for_user(user, Action.VIEW).select_related("team").order_by("team__slug", "slug")
        context.update(
            page=paginate(self.request, self.filtered(projects)),
            can_create=policies.leads_a_team(user),  # leads and platform admins create projects
        )
        return context


class ProjectCreateView(LoginRequiredMixin, View):
    template_name = "projects/form.html"

    def teams(self, request: HttpRequest) -> Any:
        teams = Team.objects.for_user(request.user, Action.MANAGE).order_by("slug")
        if not teams.exists():
            raise PermissionDenied("Only team leads and platform admins create projects.")
        return teams

    def get(self, request: HttpRequest) -> HttpResponse:
        teams = self.teams(request)
        initial = {"team": request.GET.get("team")} if request.GET.get("team") else {}
        form = ProjectCreateForm(teams=teams, initial=initial, is_admin=policies.can_attach_experiment(request.user))
        return render(request, self.template_name, {"form": form})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ProjectCreateForm(
            request.POST, teams=self.teams(request), is_admin=policies.can_attach_experiment(request.user)
        )
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            project, status = run_service(
                form,
                lambda: services.create_project(
                    actor_of(request),
                    data["team"],
                    slug=data["slug"],
                    name=data["name"],
                    description=data["description"],
                    gpu_quota=data["gpu_quota"],
                    backend=data["backend"],
                    namespace=data["namespace"],
                    mlflow_experiment=data["mlflow_experiment"],
                    attach_existing=bool(data.get("attach_existing")),
                ),
            )
            if project is not None:
                messages.success(request, f"Project {project.full_slug} created; its MLflow experiment is on the way.")
                return redirect("projects:detail", team=project.team.slug, slug=project.slug)
        return render(request, self.template_name, {"form": form}, status=status)


class ProjectDetailView(ObjectAccessMixin, FragmentMixin, TemplateView):
    """The project: settings, its MLflow experiment, access in the cluster and MLflow, and
    the lead's edit form. The access card is a fragment (`#access`): its "Check the cluster
    now" (`?check=1`, leads and admins) swaps it, compared with the cluster read now."""

    template_name = "projects/detail.html"
    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")
    fragments = ("access",)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        project: Project = self.object
        team = project.team
        can_manage = policies.can_manage_team(self.request.user, team)
        context.update(
            project=project,
            team=team,
            can_manage=can_manage,
            # `?check=1`: "Check the cluster now", as the fragment or the whole page.
            **access_context(self.request, project, live=can_manage and self.request.GET.get("check") == "1"),
        )
        if fragment_for(self.request, self.fragments) is not None:
            return context  # the access card alone
        siblings = sum(team.projects.exclude(pk=project.pk).values_list("gpu_quota", flat=True))
        context.update(
            quota_headroom=max(team.gpu_budget - siblings, 0),
            mlflow_url=gateway().experiment_url(project.mlflow_experiment_id) if project.mlflow_experiment_id else "",
            can_attach=policies.can_attach_experiment(self.request.user)
            and project.mlflow_state != ExperimentState.LINKED,
            attach_form=ExperimentAttachForm(),
            replace_form=ExperimentReplaceForm(),
            **experiment_context(self.request, project, live=True),
            edit_form=ProjectEditForm(
                initial={
                    "name": project.name,
                    "description": project.description,
                    "gpu_quota": project.gpu_quota,
                    "backend": project.backend,
                    "environment": str(project.environment_id or ""),
                },
                environments=services.environment_choices(self.request.user, team) if can_manage else [],
                current_environment=project.environment,
            ),
        )
        return context


class ProjectEditView(ObjectAccessMixin, View):
    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        project: Project = self.object
        form = ProjectEditForm(
            request.POST,
            environments=services.environment_choices(request.user, project.team),
            current_environment=project.environment,
        )
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            updated, status = run_service(
                form,
                lambda: services.update_project(
                    actor_of(request),
                    project,
                    name=data["name"],
                    description=data["description"],
                    gpu_quota=data["gpu_quota"],
                    backend=data["backend"],
                    environment=data.get("environment") or None,
                ),
            )
            if updated is not None:
                messages.success(request, "Project saved.")
                return redirect("projects:detail", team=team, slug=slug)
        view = ProjectDetailView(request=request, kwargs={"team": team, "slug": slug}, args=())
        view.object = project
        context = view.get_context_data()
        context["edit_form"] = form
        context["edit_open"] = True
        return render(request, ProjectDetailView.template_name, context, status=status)


class ExperimentAttachView(ObjectAccessMixin, View):
    """Platform admins attach an MLflow experiment that already exists (by id or name) to a
    project that has none yet (audited; see services.attach_experiment)."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        project: Project = self.object
        if not policies.can_attach_experiment(request.user):  # 403 before a form error tells anything
            raise PermissionDenied("Only platform admins attach an existing MLflow experiment.")
        form = ExperimentAttachForm(request.POST)
        status = 400
        if form.is_valid():
            attached, status = run_service(
                form, lambda: services.attach_experiment(actor_of(request), project, form.cleaned_data["experiment"])
            )
            if attached is not None:
                messages.success(request, f"MLflow experiment {attached.mlflow_experiment_id} attached.")
                return redirect("projects:detail", team=team, slug=slug)
        view = ProjectDetailView(request=request, kwargs={"team": team, "slug": slug}, args=())
        view.object = project
        context = view.get_context_data()
        context["attach_form"] = form
        return render(request, ProjectDetailView.template_name, context, status=status)


def experiment_context(request: HttpRequest, project: Project, *, live: bool = False) -> dict[str, Any]:
    """What the pages say about the project's MLflow experiment: `experiment_deleted` (the
    sentence, when the project is `deleted`, or MLflow says so now while the reconciler has
    not yet noticed), `experiment_name` (MLflow's current name when `live` could read it,
    else the stored one) and who may restore / replace it. `live` reads the experiment once
    from MLflow (a GET changes nothing: the reconciler records what it finds)."""
    from apps.projects.services import experiment_deleted_sentence
    from apps.tracking.gateway import MlflowError, MlflowUnavailable

    deleted = project.mlflow_state == ExperimentState.DELETED
    name = project.mlflow_experiment_name
    if live and project.mlflow_state == ExperimentState.LINKED and project.mlflow_experiment_id:
        try:
            found = gateway().get_experiment(project.mlflow_experiment_id)
        except (MlflowUnavailable, MlflowError):
            found = None
        else:
            deleted = found is None or found.get("lifecycle_stage") == "deleted"
        if found is not None and found.get("name"):
            name = str(found["name"])
    user = request.user
    return {
        "experiment_name": name,
        "experiment_deleted": experiment_deleted_sentence(project) if deleted else "",
        "can_restore": deleted and policies.can(user, Action.LAUNCH, project.team),
        "can_replace": deleted and policies.can_manage_team(user, project.team),
        "can_relink": deleted and policies.can_attach_experiment(user),
    }


class ExperimentRestoreView(ObjectAccessMixin, View):
    """Members, leads and platform admins restore the project's experiment deleted in
    MLflow (MLflow's restore_experiment; audited: services.restore_project_experiment)."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")
    write_action = Action.LAUNCH

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        project: Project = self.object
        form = forms.Form(request.POST)  # no input: a refusal is the form's one error
        form.is_valid()
        restored, status = run_service(form, lambda: services.restore_project_experiment(actor_of(request), project))
        if restored is None:
            return _detail_with_error(request, project, team, slug, [str(e) for e in form.non_field_errors()], status)
        messages.success(request, f"MLflow experiment {restored.mlflow_experiment_id} restored; linked again.")
        return redirect("projects:detail", team=team, slug=slug)


class ExperimentReplaceView(ObjectAccessMixin, View):
    """Leads and platform admins give a project whose experiment was deleted a new one
    (audited: services.replace_project_experiment)."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")
    write_action = Action.LAUNCH  # the service answers 403 to members (a lead's decision)

    def post(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        project: Project = self.object
        form = ExperimentReplaceForm(request.POST)
        status = 400
        if form.is_valid():
            replaced, status = run_service(
                form,
                lambda: services.replace_project_experiment(actor_of(request), project, form.cleaned_data["name"]),
            )
            if replaced is not None:
                messages.success(request, f"New MLflow experiment {replaced.mlflow_experiment_name!r} linked.")
                return redirect("projects:detail", team=team, slug=slug)
        return _detail_with_error(request, project, team, slug, [], status, replace_form=form)


def _detail_with_error(
    request: HttpRequest,
    project: Project,
    team: str,
    slug: str,
    errors: Any,
    status: int,
    **extra: Any,
) -> HttpResponse:
    if status == 403:
        raise PermissionDenied(" ".join(errors) or "You may not do that in this project.")
    view = ProjectDetailView(request=request, kwargs={"team": team, "slug": slug}, args=())
    view.object = project
    context = view.get_context_data()
    context.update(experiment_errors=list(errors), **extra)
    return render(request, ProjectDetailView.template_name, context, status=status)


def access_context(request: HttpRequest, project: Project, *, live: bool = False) -> dict[str, Any]:
    """Where the project's access stands in the cluster and MLflow (the last sync pass), and,
    when `live`, what the next pass would change in the cluster, read now."""
    from apps.compute.base import BackendRejected, BackendUnavailable
    from apps.console.models import SyncState
    from apps.console.scheduling import cluster_sync_enabled, mlflow_sync_enabled
    from apps.console.sync import live_cluster_plan

    context: dict[str, Any] = {
        "syncs": {s.target: s for s in SyncState.objects.filter(project=project)},
        "cluster_sync": cluster_sync_enabled(project),
        "mlflow_sync": mlflow_sync_enabled(),
    }
    if live and context["cluster_sync"]:
        try:
            context["pending_drift"] = live_cluster_plan(project)
        except (BackendUnavailable, BackendRejected) as exc:
            context["live_error"] = str(exc)
    return context


class ProjectAccessView(ObjectAccessMixin, View):
    """The address the project page's access card once had: the project page, at that
    card (`?check=1` kept). Unseen projects are 404 as everywhere."""

    lookup = get_project_by_slug_for_user
    lookup_kwargs = ("team", "slug")

    def get(self, request: HttpRequest, team: str, slug: str) -> HttpResponse:
        page = reverse("projects:detail", kwargs={"team": team, "slug": slug})
        query = "?check=1" if request.GET.get("check") == "1" else ""
        return redirect(f"{page}{query}#access")
