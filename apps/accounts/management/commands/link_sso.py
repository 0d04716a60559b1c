"""Link an existing account to a single sign-on identity (or unlink it), explicitly.

SSO never merges a sign-in into an existing account by name (apps.accounts.oidc): an account
that existed before its owner first used SSO, or one an admin invited, is linked here, by the
identity provider's issuer (`iss`) and the person's subject (`sub`), both shown in the
provider's admin console and in the `user.sso_refused` audit event of a refused sign-in."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts import services
from apps.accounts.models import User
from apps.core.errors import ServiceError


class Command(BaseCommand):
    help = "Link an account to an SSO identity (issuer + subject), or --unlink it. Audited."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username", help="The Plinth account to link.")
        parser.add_argument("--issuer", default="", help="The identity provider's issuer URL (the `iss` claim).")
        parser.add_argument("--subject", default="", help="The person's subject at the provider (the `sub` claim).")
        parser.add_argument("--unlink", action="store_true", help="Remove the account's SSO link instead.")
        parser.add_argument(
            "--by",
            default="",
            help="The platform admin doing this, named in the audit event (default: the system operator).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"There is no user called {options['username']!r}.")
        actor = None
        if options["by"]:
            actor = User.objects.filter(username=options["by"], is_active=True).first()
            if actor is None:
                raise CommandError(f"There is no active user called {options['by']!r}.")
        try:
            if options["unlink"]:
                services.unlink_sso_identity(actor, user)
                self.stdout.write(f"{user.username} is no longer linked to an SSO identity.")
            else:
                services.link_sso_identity(actor, user, issuer=options["issuer"], subject=options["subject"])
                self.stdout.write(f"{user.username} now signs in through SSO as {options['subject']!r}.")
        except ServiceError as exc:
            raise CommandError(exc.message) from None
