"""Static files go out compressed and cacheable: `collectstatic` (as `make install` runs it)
writes plotly.js under a content-hashed name with brotli and gzip copies beside it, and the
site's whitenoise middleware answers the hashed name in the encoding the browser asks for,
cacheable for good (the name changes when the content does)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command
from django.templatetags.static import static
from django.test import Client

BUNDLE = "vendor/plotly-basic.min.js"
A_YEAR = 365 * 24 * 3600


def collect(settings: Any, tmp_path: Path) -> str:
    """The basic plotly.js bundle collected into a temporary STATIC_ROOT by the site's own
    storage (only that file, to keep brotli's time short); its hashed name."""
    source = finders.find(BUNDLE)
    assert source, f"{BUNDLE} is not in static/ (apps.core.vendor writes it)"
    folder = tmp_path / "source"
    (folder / "vendor").mkdir(parents=True)
    shutil.copy(str(source), folder / BUNDLE)
    settings.STATICFILES_DIRS = [folder]
    settings.STATICFILES_FINDERS = ["django.contrib.staticfiles.finders.FileSystemFinder"]
    settings.STATIC_ROOT = tmp_path / "collected"
    call_command("collectstatic", interactive=False, verbosity=0)
    storage: Any = staticfiles_storage  # the site's manifest storage (hashed names)
    hashed = str(storage.stored_name(BUNDLE))
    assert re.fullmatch(r"vendor/plotly-basic\.min\.[0-9a-f]{12}\.js", hashed), hashed
    for suffix in ("", ".br", ".gz"):
        assert (tmp_path / "collected" / f"{hashed}{suffix}").is_file(), f"{hashed}{suffix} not collected"
    return hashed


def fetch(hashed: str, encoding: str) -> Any:
    """A fresh client (so whitenoise reads the new STATIC_ROOT) asking for the file."""
    return Client().get(f"/static/{hashed}", headers={"accept-encoding": encoding} if encoding else {})


def test_the_chart_bundle_is_served_compressed_under_its_hashed_name_and_cached_for_good(
    settings: Any, tmp_path: Path
) -> None:
    hashed = collect(settings, tmp_path)
    assert static(BUNDLE) == f"/static/{hashed}", "pages link the hashed name"
    plain_size = (tmp_path / "collected" / hashed).stat().st_size

    for asked, encoding in (("br, gzip", "br"), ("gzip", "gzip"), ("", None)):
        answer = fetch(hashed, asked)
        assert answer.status_code == 200, asked
        assert answer.headers.get("Content-Encoding") == encoding, (asked, answer.headers)
        assert "Accept-Encoding" in answer.headers.get("Vary", ""), answer.headers
        cache = answer.headers["Cache-Control"]
        assert "immutable" in cache and "public" in cache, cache
        max_age = int(cache.split("max-age=")[1].split(",")[0])
        assert max_age >= A_YEAR, cache
        size = int(answer.headers["Content-Length"])
        if encoding:
            assert size < plain_size / 2, f"{encoding}: {size} of {plain_size} bytes"
        else:
            assert size == plain_size
        assert answer.headers["Content-Type"].startswith(("text/javascript", "application/javascript"))

    # The plain name (served from static/ by the finders outside production) is not cached for good.
    plain = fetch(BUNDLE, "br")
    assert plain.status_code == 200 and "immutable" not in plain.headers.get("Cache-Control", "")
