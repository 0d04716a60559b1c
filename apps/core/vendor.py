"""Fetch third-party browser code from its package registry at install time.

htmx comes from the npm package `htmx.org`; plotly.js from three of Plotly's official
bundles, all of the version the plotly Python package carries: `plotly.js-basic-dist-min`
(scatter, bar, pie: 1.2 MB), `plotly.js-cartesian-dist-min` (adds heatmap, box, histogram,
contour...: 1.5 MB) and `plotly.js-strict-dist-min` (every trace type: 5.2 MB). A page
loads the smallest one that draws its charts (apps.core.figures.BUNDLES, static/plinth/
charts.js): parsing the strict bundle alone takes about a second in a browser.

The strict bundle is the one whose WebGL traces (parcoords here) use precompiled shaders
where the full bundle compiles code with `Function(...)`, which the site's
Content-Security-Policy (script-src 'self', no 'unsafe-eval') blocks; parcoords is in no
smaller bundle without that eval (gl2d's is the eval one). The basic and cartesian bundles
draw under the policy too (tests/e2e/test_csp.py).

Each tarball is checked against the registry's published sha512 integrity before anything
is unpacked.

    python -m apps.core.vendor            # fetch what is missing
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGES = [
    {
        "name": "htmx.org",
        "version": "2.0.8",
        "integrity": "sha512-fm297iru0iWsNJlBrjvtN7V9zjaxd+69Oqjh4F/Vq9Wwi2kFisLcrLCiv5oBX0KLfOX/zG8AUo9ROMU5XUB44Q==",
        "files": {"package/dist/htmx.min.js": "htmx.min.js"},
    },
    {
        "name": "plotly.js-basic-dist-min",
        "version": "4.1.1",
        "integrity": "sha512-1oNF8PeQx2hv/y7tqEVWKD3JGwn/MGEMQ8mL9HUwsaqG9FGy/OU5FHUHvzqbqxN4mnwZGI9abTiE775C4kkjMQ==",
        "files": {"package/plotly-basic.min.js": "plotly-basic.min.js"},
    },
    {
        "name": "plotly.js-cartesian-dist-min",
        "version": "4.1.1",
        "integrity": "sha512-o8GrFeusncwBIxbBynRJpY4pkgVB6caM+JLpwrLYbbsO7dZ8FJ+SVN2Fr+L7kiG/Z6w4P5O0Jus/Qr5EefHVeg==",
        "files": {"package/plotly-cartesian.min.js": "plotly-cartesian.min.js"},
    },
    {
        "name": "plotly.js-strict-dist-min",
        "version": "4.1.1",
        "integrity": "sha512-/M2gRAF8LeqafKIO/bUU+DQk7RlonVbwpPb2G/jZsfqCl/DttBfvF+wQfZ6vT9y9EKy47eDI/zfIWC/uA1L6TQ==",
        "files": {"package/plotly-strict.min.js": "plotly-strict.min.js"},
    },
]
REGISTRY = "https://registry.npmjs.org"
TARGET = Path(__file__).resolve().parents[2] / "static" / "vendor"


def _verify(data: bytes, integrity: str) -> None:
    algorithm, _, expected = integrity.partition("-")
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if digest != expected:
        raise SystemExit(f"integrity mismatch: expected {integrity}, got {algorithm}-{digest}")


def fetch(target: Path = TARGET) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for package in PACKAGES:
        wanted = {member: target / out for member, out in package["files"].items()}  # type: ignore[attr-defined]
        stamp = target / f".{package['name']}-{package['version']}"
        if stamp.exists() and all(path.exists() for path in wanted.values()):
            continue
        url = f"{REGISTRY}/{package['name']}/-/{package['name']}-{package['version']}.tgz"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
            data = response.read()
        _verify(data, str(package["integrity"]))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for member, path in wanted.items():
                extracted = archive.extractfile(member)
                if extracted is None:
                    raise SystemExit(f"{member} missing from {url}")
                path.write_bytes(extracted.read())
                written.append(path)
        stamp.write_text(url + "\n")
    return written


if __name__ == "__main__":
    for path in fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET):
        print(f"vendored {path}")
