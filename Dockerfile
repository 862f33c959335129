# Delegate: one image for web, worker, scheduler and the sandbox; the command picks the role (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DELEGATE_VAR_DIR=/app/var
WORKDIR /app
RUN useradd --create-home --uid 10001 delegate
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY automations ./automations
COPY manage.py ./
# collectstatic needs no secrets: DEBUG on for this build step only (at run time DEBUG is off and
# the settings refuse to start without DJANGO_SECRET_KEY and DELEGATE_AUDIT_DIGEST_KEY).
RUN pip install . && mkdir -p /app/var /var/lib/delegate/audit-digests /var/log/delegate \
    && DJANGO_DEBUG=true python manage.py collectstatic --noinput \
    && chown -R delegate /app/var /var/lib/delegate /var/log/delegate
USER delegate
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi", "-b", "0.0.0.0:8000", "-w", "3", "--threads", "4", "--access-logfile", "-"]
