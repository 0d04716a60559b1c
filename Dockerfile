# Plinth's portal image: the web server (gunicorn), the Celery worker and beat, and the
# migration Job all run this image with a different command (see deploy/).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
RUN python -m venv /venv && /venv/bin/pip install --upgrade pip && /venv/bin/pip install .
COPY . .
# htmx from its npm package (checked against the registry's integrity), then the static
# files with whitenoise's manifest, built with production settings and a throwaway key.
RUN /venv/bin/python -m apps.core.vendor \
 && PLINTH_ENV=production PLINTH_SECRET_KEY=build-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz \
    PLINTH_DATA_DIR=/tmp/plinth PLINTH_STATIC_ROOT=/app/staticfiles \
    /venv/bin/python manage.py collectstatic --noinput

FROM python:3.11-slim
ENV PATH=/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PLINTH_ENV=production \
    PLINTH_DATA_DIR=/var/lib/plinth \
    PLINTH_STATIC_ROOT=/app/staticfiles
RUN useradd --uid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin plinth \
 && mkdir -p /var/lib/plinth && chown plinth /var/lib/plinth
COPY --from=build /venv /venv
COPY --from=build --chown=root:root /app /app
WORKDIR /app
USER 10001
EXPOSE 8000
# Liveness only: readiness (/readyz) is the orchestrator's business.
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# Worker timeout = PLINTH_WEB_TIMEOUT, from the settings (portal/gunicorn.py).
CMD ["gunicorn", "-c", "python:portal.gunicorn", "portal.wsgi:application"]
