"""Request-id middleware (log correlation) and a fast 503 when the database is unreachable."""
import re
import uuid

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse

log = structlog.get_logger(__name__)

# What we accept as a request id from our own proxy: short, printable, nothing to inject.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    """Bind one id per web request to every log line, and echo it back as X-Request-Id.

    Behind a trusted proxy (DELEGATE_TRUSTED_PROXY_COUNT > 0) the proxy's X-Request-Id is kept
    when it looks like one, so one id follows the request from the proxy's log to ours. Tasks
    the request publishes carry it too (automations.tasks).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        trusted = getattr(settings, "TRUSTED_PROXY_COUNT", 0) > 0 and _SAFE_REQUEST_ID.match(incoming)
        request_id = incoming if trusted else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response


class DatabaseUnavailableMiddleware:
    """PostgreSQL unreachable: answer 503 with Retry-After at once instead of a 500 page.

    Services write inside transaction.atomic(), so a failed request leaves no partial rows;
    the client may simply retry (reliability-security.md §1.5).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("database.unavailable", path=request.path, error=type(exception).__name__)
        if request.path.startswith("/api/"):
            response = JsonResponse({"code": "database_unavailable",
                                     "detail": "The database is unavailable; try again in a moment."}, status=503)
        else:
            response = HttpResponse("The service is briefly unavailable; try again in a moment.\n", status=503,
                                    content_type="text/plain")
        response["Retry-After"] = "5"
        return response
