"""Validation of an environment's content: its name, its image reference (a Docker
reference, pinned when it carries a digest) and its pod defaults (Kubernetes' rules for
label keys and values, tolerations and environment variable names). Each raises
InvalidInput on the field it checks, naming the first bad part."""

from __future__ import annotations

import re
from typing import Any

from apps.core.errors import InvalidInput

# A Docker/OCI image reference (the grammar of distribution/reference): an optional registry
# host[:port], path components of lower-case letters and digits joined by ., _, __ or -,
# an optional tag, an optional sha256 digest. `python:3.12`, `ghcr.io/acme/sk:1.7@sha256:…`.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
IMAGE_RE = re.compile(
    rf"^(?P<repository>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
MAX_IMAGE = 500
# Kubernetes label keys and values (a qualified name with an optional DNS-subdomain prefix).
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_OPERATORS = ("Equal", "Exists")
TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_POD_ITEMS = 50


def _image_match(image: str) -> re.Match[str] | None:
    """The match of the reference after its registry: the first part is a registry host
    when it has a dot or a port or is `localhost` (Docker's rule), else part of the path."""
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return IMAGE_RE.match(rest) if DOMAIN_RE.match(first) else None
    return IMAGE_RE.match(image)


def image_is_pinned(image: str) -> bool:
    """Whether an image reference names its content by digest (`…@sha256:<64 hex>`)."""
    match = _image_match(image or "")
    return bool(match and match.group("digest"))


def validate_image(image: Any) -> str:
    """The image reference trimmed ("" for none). Raises InvalidInput on `image` unless it is
    a Docker reference: [registry[:port]/]repository[:tag][@sha256:<64 lower-case hex>]."""
    text = str(image if image is not None else "").strip()
    if not text:
        return ""
    if len(text) > MAX_IMAGE or not _image_match(text):
        raise InvalidInput.field(
            "image",
            "Not an image reference: use registry/repository[:tag][@sha256:<64 hex digits>], "
            "e.g. ghcr.io/acme/sklearn:1.7 (lower-case repository).",
        )
    return text


def _is_label_key(key: Any) -> bool:
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(name))


def _is_label_value(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or bool(_LABEL_NAME.match(value)))


def _pod_error(message: str) -> InvalidInput:
    return InvalidInput.field("pod_defaults", message)


def validate_pod_defaults(value: Any) -> dict[str, Any]:
    """Pod defaults in their stored shape: {"node_selector": {label key: label value},
    "tolerations": [{key, operator, value, effect, tolerationSeconds}], "env": {NAME: str}}
    (the keys that are empty are left out; None or {} → {}). Every part follows the
    Kubernetes rules (label syntax; Toleration's operators Equal/Exists and effects
    NoSchedule/PreferNoSchedule/NoExecute; env names are C identifiers). Raises
    InvalidInput on `pod_defaults` naming the first bad part."""
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise _pod_error("Pod defaults are an object with node_selector, tolerations and env.")
    unknown = sorted(set(value) - {"node_selector", "tolerations", "env"})
    if unknown:
        raise _pod_error(f"Unknown pod default(s): {', '.join(map(str, unknown))} (node_selector, tolerations, env).")
    cleaned: dict[str, Any] = {}
    selector = value.get("node_selector") or {}
    if not isinstance(selector, dict) or len(selector) > MAX_POD_ITEMS:
        raise _pod_error(f"node_selector is an object of at most {MAX_POD_ITEMS} label keys and values.")
    for key, label in selector.items():
        if not _is_label_key(key):
            raise _pod_error(f"node_selector: {str(key)[:80]!r} is not a Kubernetes label key.")
        if not _is_label_value(label):
            raise _pod_error(f"node_selector: the value of {key} is not a Kubernetes label value.")
    if selector:
        cleaned["node_selector"] = dict(selector)
    tolerations = value.get("tolerations") or []
    if not isinstance(tolerations, list) or len(tolerations) > MAX_POD_ITEMS:
        raise _pod_error(f"tolerations is a list of at most {MAX_POD_ITEMS} tolerations.")
    clean_tolerations = [_toleration(i, t) for i, t in enumerate(tolerations, start=1)]
    if clean_tolerations:
        cleaned["tolerations"] = clean_tolerations
    env = value.get("env") or {}
    if not isinstance(env, dict) or len(env) > MAX_POD_ITEMS:
        raise _pod_error(f"env is an object of at most {MAX_POD_ITEMS} NAME: value pairs.")
    for name, text in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise _pod_error(f"env: {str(name)[:80]!r} is not a variable name (letters, digits, _; no digit first).")
        if not isinstance(text, str) or len(text) > 4096:
            raise _pod_error(f"env: the value of {name} must be text (at most 4096 characters).")
    if env:
        cleaned["env"] = dict(env)
    return cleaned


def _toleration(number: int, given: Any) -> dict[str, Any]:
    where = f"tolerations[{number}]"
    if not isinstance(given, dict):
        raise _pod_error(f"{where} is an object with key, operator, value, effect, tolerationSeconds.")
    unknown = sorted(set(given) - TOLERATION_KEYS)
    if unknown:
        raise _pod_error(f"{where}: unknown field(s) {', '.join(map(str, unknown))}.")
    key = given.get("key", "") or ""
    operator = given.get("operator", "Equal") or "Equal"
    value = given.get("value", "") or ""
    effect = given.get("effect", "") or ""
    seconds = given.get("tolerationSeconds")
    if operator not in TOLERATION_OPERATORS:
        raise _pod_error(f"{where}: operator must be Equal or Exists.")
    if effect not in TOLERATION_EFFECTS:
        raise _pod_error(f"{where}: effect must be NoSchedule, PreferNoSchedule or NoExecute (or empty: all).")
    if key and not _is_label_key(key):
        raise _pod_error(f"{where}: {str(key)[:80]!r} is not a taint key.")
    if not key and operator != "Exists":
        raise _pod_error(f"{where}: an empty key matches every taint only with operator Exists.")
    if operator == "Exists" and value:
        raise _pod_error(f"{where}: with operator Exists the value must be empty.")
    if value and not _is_label_value(value):
        raise _pod_error(f"{where}: {str(value)[:80]!r} is not a taint value.")
    out: dict[str, Any] = {"operator": operator}
    if key:
        out["key"] = key
    if value:
        out["value"] = value
    if effect:
        out["effect"] = effect
    if seconds is not None:
        if effect != "NoExecute":
            raise _pod_error(f"{where}: tolerationSeconds applies to effect NoExecute only.")
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not -(2**63) <= seconds < 2**63:
            raise _pod_error(f"{where}: tolerationSeconds is a whole number of seconds.")
        out["tolerationSeconds"] = seconds
    return out


def validate_name(name: Any) -> str:
    """An environment's name: lower-case letters, digits, hyphens and dots, starting and
    ending with a letter or digit, at most 63 (`sklearn-1.7`). Raises InvalidInput on `name`."""
    text = str(name if name is not None else "").strip()
    if not NAME_RE.fullmatch(text):
        raise InvalidInput.field(
            "name", "Use lower-case letters, digits, hyphens and dots (at most 63), e.g. sklearn-1.7."
        )
    return text
