"""The static files storage outside production: whitenoise's compressed manifest storage
(hashed names, gzip and brotli, cacheable for a year) once `collectstatic` has run, and the
plain names (served from static/ by the finders) for files it has not collected, e.g. in
a fresh checkout or the tests. Hashed names are used under DEBUG too: the embedded mode is
what most people run, and it should load as fast as production."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from whitenoise.storage import CompressedManifestStaticFilesStorage


class CollectedOrSourceStorage(CompressedManifestStaticFilesStorage):
    manifest_strict = False

    def stored_name(self, name: str) -> str:
        try:
            return str(super().stored_name(name))
        except ValueError:  # not collected: the finders serve it under its own name
            return name

    def compress_files(self, paths: Iterable[str]) -> Iterator[tuple[str, str]]:
        # A hashed name is its content: one compressed already (an earlier collectstatic) is
        # current, so only new files are compressed (brotli takes seconds on plotly.js).
        fresh = [p for p in paths if not (self.exists(f"{p}.br") or self.exists(f"{p}.gz"))]
        return super().compress_files(fresh)  # type: ignore[no-any-return]

    def url(self, name: str | None, force: bool = False) -> str:
        return str(super().url(name, force=True))
