"""Checking what people ask a template for: parameter values and resources.

Errors are collected per field ("parameters.<name>", "resources.<name>") so a page or an
API response shows every problem at once."""

from __future__ import annotations

import math
import re
from typing import Any

from apps.core.errors import InvalidInput
from apps.launches.models import ParamType, Template

QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "Ki": 2**10, "M": 1e6, "Mi": 2**20, "G": 1e9, "Gi": 2**30, "T": 1e12, "Ti": 2**40}
MAX_STR = 1000
# What a launch or sweep may ask for; `gpu_product` is the value of the node label
# nvidia.com/gpu.product that a GPU pod selects ("" for any GPU).
RESOURCE_KEYS = ("cpu", "memory", "gpus", "gpu_product")
# The old name of `gpu_product`, still accepted on input (deprecated), never written.
DEPRECATED_GPU_KEY = "gpu_model"


def quantity(value: str) -> float:
    """A Kubernetes quantity ("500m", "2", "4Gi") as a number."""
    match = QUANTITY.match(value)
    if not match:
        raise ValueError(value)
    return float(match.group(1)) * _UNITS[match.group(3) or ""]


def check_value(spec: dict[str, Any], value: Any) -> Any:
    """The clean value for one parameter, or ValueError with the message to show."""
    kind = spec.get("type", ParamType.STR)
    if kind == ParamType.BOOL:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value
    if kind == ParamType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number")
    elif kind == ParamType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("must be a number")
        value = float(value)
    elif kind == ParamType.CHOICE:
        choices = spec.get("choices", [])
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(map(str, choices))}")
        return value
    else:
        if not isinstance(value, str):
            raise ValueError("must be text")
        if len(value) > MAX_STR or "\x00" in value:
            raise ValueError(f"must be at most {MAX_STR} characters, without NUL bytes")
        return value
    if "min" in spec and value < spec["min"]:
        raise ValueError(f"must be at least {spec['min']}")
    if "max" in spec and value > spec["max"]:
        raise ValueError(f"must be at most {spec['max']}")
    return value


def clean_parameters(template: Template, raw: Any) -> dict[str, Any]:
    """Defaults filled in, every value type- and bounds-checked; unknown names refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput.field("parameters", "Parameters must be an object of name: value.")
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    for name in raw:
        if name not in template.parameters:
            errors[f"parameters.{name}"] = [f"{template.slug} has no parameter {name!r}."]
    for name, spec in template.parameters.items():
        value = raw.get(name, spec.get("default"))
        if value is None:
            errors[f"parameters.{name}"] = ["This parameter is required."]
            continue
        try:
            clean[name] = check_value(spec, value)
        except ValueError as exc:
            errors[f"parameters.{name}"] = [f"{name} {exc}."]
    if errors:
        raise InvalidInput("Some parameters are not valid.", fields=errors)
    return clean


def with_gpu_product(raw: dict[str, Any], field: str, errors: dict[str, list[str]]) -> dict[str, Any]:
    """A copy of the resources object `raw` with the deprecated key `gpu_model` renamed
    `gpu_product`. When both are given and differ, `gpu_product` is kept and
    `errors["<field>.gpu_model"]` says so (the caller raises InvalidInput, a 400)."""
    clean = dict(raw)
    if DEPRECATED_GPU_KEY not in clean:
        return clean
    legacy = clean.pop(DEPRECATED_GPU_KEY)
    if "gpu_product" not in clean:
        clean["gpu_product"] = legacy
    elif clean["gpu_product"] != legacy:
        errors[f"{field}.{DEPRECATED_GPU_KEY}"] = [
            f"gpu_model is the deprecated name of gpu_product; give gpu_product only "
            f"(here they differ: {legacy!r} and {clean['gpu_product']!r})."
        ]
    return clean


def clean_resources(template: Template, raw: Any) -> dict[str, Any]:
    """CPU, memory, GPUs and GPU product ({"cpu": "2", "memory": "4Gi", "gpus": 1,
    "gpu_product": "NVIDIA-A100-SXM4-80GB"}), defaulted from the template and capped by its
    maximum; `gpu_model` is read as `gpu_product` (deprecated). InvalidInput (400) with
    "resources.<name>" messages otherwise."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput.field("resources", "Resources must be an object with cpu, memory, gpus, gpu_product.")
    defaults = {"cpu": "1", "memory": "1Gi", "gpus": 0, "gpu_product": "", **template.default_resources}
    limits = template.max_resources
    errors: dict[str, list[str]] = {}
    raw = with_gpu_product(raw, "resources", errors)
    unknown = set(raw) - set(RESOURCE_KEYS)
    for name in sorted(unknown):
        errors[f"resources.{name}"] = [f"Unknown resource {name!r}; use cpu, memory, gpus, gpu_product."]
    clean = {key: raw.get(key, defaults[key]) for key in RESOURCE_KEYS}
    for key in ("cpu", "memory"):
        value = str(clean[key])
        try:
            amount = quantity(value)
        except ValueError:
            errors[f"resources.{key}"] = [f"{value!r} is not a quantity like 2, 500m or 4Gi."]
            continue
        if amount <= 0:
            errors[f"resources.{key}"] = [f"{key} must be more than zero."]
        elif key in limits and amount > quantity(str(limits[key])):
            errors[f"resources.{key}"] = [f"{value} is more than this template allows ({limits[key]})."]
        clean[key] = value
    gpus = clean["gpus"]
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        errors["resources.gpus"] = ["GPUs must be a whole number, 0 or more."]
    elif gpus > int(limits.get("gpus", 0)):
        errors["resources.gpus"] = [f"{gpus} GPUs is more than this template allows ({limits.get('gpus', 0)})."]
    if not isinstance(clean["gpu_product"], str) or len(clean["gpu_product"]) > 63:
        errors["resources.gpu_product"] = ["The GPU product is a node label value of at most 63 characters."]
    if errors:
        raise InvalidInput("Some resources are not valid.", fields=errors)
    return clean
