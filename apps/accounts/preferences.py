"""A person's own display preferences (the account page). Each change is audited."""

from __future__ import annotations

from django.db import transaction

from apps.accounts.models import User
from apps.audit.services import record
from apps.audit.verbs import AuditVerb
from apps.core.errors import InvalidInput
from apps.core.timezones import valid_zone


@transaction.atomic
def set_time_zone(actor: User, zone: str) -> User:
    """Set the IANA time zone `actor`'s pages show times in ("" = the browser's zone).
    InvalidInput (400, field `time_zone`) for a name `zoneinfo.available_timezones()` does
    not know. Audited as `account.time_zone_set`; setting the same zone again is a no-op."""
    zone = (zone or "").strip()
    if zone and not valid_zone(zone):
        message = f"{zone[:64]!r} is not a time zone this server knows (e.g. Europe/Paris)."
        raise InvalidInput.field("time_zone", message)
    user = User.objects.select_for_update().get(pk=actor.pk)
    if user.time_zone == zone:
        return user
    before = user.time_zone
    user.time_zone = zone
    user.save(update_fields=["time_zone"])
    record(user, AuditVerb.ACCOUNT_TIME_ZONE_SET, user, before={"time_zone": before}, after={"time_zone": zone})
    return user
