# Delegate: one image for web, worker, scheduler and the sandbox; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DELEGATE_VAR_DIR=/app/var
WORKDIR /app
RUN useradd --create-home --uid 10001 delegate
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY automations ./automations
COPY manage.py ./
RUN pip install . && mkdir -p /app/var && DJANGO_SECRET_KEY=build-only python manage.py collectstatic --noinput \
    && chown -R delegate /app/var
USER delegate
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi", "-b", "0.0.0.0:8000", "-w", "3", "--threads", "4", "--access-logfile", "-"]
