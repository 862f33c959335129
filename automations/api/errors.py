"""Every API error as JSON: {"code": stable identifier, "detail": human sentence, "errors": per field}."""
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from automations.errors import DomainError


def _flatten(detail) -> dict:
    if isinstance(detail, dict):
        return {str(key): [str(item) for item in (value if isinstance(value, list) else [value])]
                for key, value in detail.items()}
    if isinstance(detail, list):
        return {"non_field_errors": [str(item) for item in detail]}
    return {}


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        body = {"code": exc.code, "detail": exc.detail}
        if exc.errors:
            body["errors"] = _flatten(exc.errors)  # always {field: [message, ...]}, as the schema says
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = {"code": "invalid", "detail": "The input is not valid.", "errors": _flatten(exc.detail)}
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        code = getattr(detail, "code", None) or exc.default_code
        if isinstance(exc, exceptions.PermissionDenied) and str(detail).startswith("CSRF Failed"):
            code = "csrf_failed"  # a session-authenticated write without the CSRF token
        response.data = {"code": str(code), "detail": str(detail if not isinstance(detail, (list, dict)) else exc.default_detail)}
    if response.status_code == status.HTTP_404_NOT_FOUND:
        response.data = {"code": "not_found", "detail": "Not found."}
    return response


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request, exception=None):
    """handler404: a URL that matches nothing under /api/ (e.g. `/requests/abc/`) still answers JSON."""
    if _is_api(request):
        return JsonResponse({"code": "not_found", "detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    """handler500: JSON under /api/, the plain page elsewhere; never a traceback."""
    if _is_api(request):
        return JsonResponse({"code": "server_error", "detail": "Something went wrong; it has been logged."},
                            status=500)
    return defaults.server_error(request)
