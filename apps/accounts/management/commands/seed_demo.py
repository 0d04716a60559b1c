"""Create the demo team, project and users. Idempotent: running it twice changes nothing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.access.roles import Role
from apps.accounts.models import Membership, Team, User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.projects.models import Backend, Project

SKLEARN_ENVIRONMENT: dict[str, Any] = {
    "name": "sklearn-1.7",
    "description": "scikit-learn 1.7 over the portal's own packages.",
    "requirements": "scikit-learn>=1.7,<1.8",
    "extends_portal": True,
}

DEMO_USERS = [
    # username, full name, team role (None = platform admin, no team role)
    ("ada", "Ada Lovelace", Role.MEMBER),
    ("lin", "Lin Lead", Role.LEAD),
    ("vic", "Vic Viewer", Role.VIEWER),
    ("root", "Platform Admin", None),
]


class Command(BaseCommand):
    help = "Create the demo team 'demo', project 'demo', users ada (member), lin (lead), vic and root (admin)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--with-viewer",
            action="store_true",
            help="Also put vic in the team as a viewer (by default vic is left for the lead to add).",
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        password = settings.PLINTH_DEMO_PASSWORD
        created: list[str] = []
        users: dict[str, User] = {}
        for username, full_name, _role in DEMO_USERS:
            first, _, last = full_name.partition(" ")
            user, made = User.objects.get_or_create(
                username=username,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "email": f"{username}@plinth.invalid",
                    "is_platform_admin": username == "root",
                },
            )
            if made:
                user.set_password(password)
                user.save()
                created.append(f"user {username}")
            users[username] = user
        team, made = Team.objects.get_or_create(
            slug="demo", defaults={"name": "Demo team", "description": "Try Plinth here.", "gpu_budget": 4}
        )
        if made:
            record(users["root"], AuditVerb.TEAM_CREATED, team, team=team, after={"slug": "demo", "gpu_budget": 4})
            created.append("team demo")
        for username, _full_name, role in DEMO_USERS:
            # vic is left out by default: adding the viewer is the lead's first thing to try.
            if role is None or (username == "vic" and not options["with_viewer"]):
                continue
            membership, made = Membership.objects.get_or_create(
                team=team, user=users[username], defaults={"role": role}
            )
            if made:
                record(
                    users["root"],
                    AuditVerb.TEAM_MEMBER_ADDED,
                    membership,
                    team=team,
                    after={"user": username, "role": role},
                )
                created.append(f"{username} as {role}")
        project = Project.objects.filter(team=team, slug="demo").first()
        if project is None:
            from apps.projects.services import create_project

            project = create_project(
                users["root"],
                team,
                slug="demo",
                name="Demo project",
                description="Digits classifier experiments.",
                gpu_quota=0,
                backend=Backend.LOCAL,
            )
            created.append("project demo/demo")
        from apps.launches.demo import SKLEARN_DIGITS
        from apps.launches.models import Template

        existing = Template.objects.filter(team__isnull=True, slug=SKLEARN_DIGITS["slug"]).first()
        if existing is None:
            from apps.launches.services import create_template

            create_template(users["root"], None, **SKLEARN_DIGITS)
            created.append(f"template {SKLEARN_DIGITS['slug']}")
        elif changes := demo_template_changes(existing, SKLEARN_DIGITS):
            from apps.launches.services import update_template

            root, template = users["root"], existing
            # After this command's transaction: the service is the outermost unit of work.
            transaction.on_commit(lambda: update_template(root, template, **changes))
            created.append(f"template {SKLEARN_DIGITS['slug']} brought up to date ({', '.join(sorted(changes))})")
        from apps.environments.models import Environment

        if not Environment.objects.filter(team__isnull=True, name=SKLEARN_ENVIRONMENT["name"]).exists():
            from apps.environments.services import create_environment

            # The portal's own scikit-learn is newer than 1.7, so this one is a real build (queued
            # for the worker after the commit): scikit-learn 1.7 over the portal's packages. Once
            # it is ready, the platform admin may make it the default (its page's "Make default").
            create_environment(users["root"], **SKLEARN_ENVIRONMENT)
            created.append(f"environment {SKLEARN_ENVIRONMENT['name']} (building)")
        self.stdout.write("seed_demo: " + (", ".join(created) if created else "nothing to do, demo data present"))


def demo_template_changes(template: Any, demo: dict[str, Any]) -> dict[str, Any]:
    """What a demo template seeded by an older Plinth lacks of today's `demo` definition
    (apps.launches.demo): the objective when it has none, and parameters it does not have
    with the command that passes them — only when its command is today's with arguments
    missing (so a template someone changed keeps their command). {} when up to date."""
    changes: dict[str, Any] = {}
    if not template.objective and demo.get("objective"):
        changes["objective"] = demo["objective"]
    missing = {name: spec for name, spec in demo["parameters"].items() if name not in template.parameters}
    if missing and all(part in demo["command"] for part in template.command):
        changes["parameters"] = {**template.parameters, **missing}
        changes["command"] = demo["command"]
    return changes
