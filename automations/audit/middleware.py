"""Audit the 404s a signed-in user gets from a view: how an IDOR probe looks from outside.

Selectors make an object outside the user's scope indistinguishable from a missing one (404,
never 403). That protects the object, but the attempt itself must be on record (ASVS
v5.0.0-16.3.2): one middleware covers every page and API view, including DRF's, whose 404s
are rendered as responses rather than raised. Only routes that matched count, so a mistyped
URL is not an "access denied"; the event names the probed request when the URL points at one
that exists, so the leads of that team see the probe in their audit view too.
"""
from __future__ import annotations

import structlog
from django.db import DatabaseError, transaction

from automations import audit
from automations.audit import ClientInfo
from automations.models import AutomationRequest, Execution

log = structlog.get_logger(__name__)

# Routes whose `pk` is an AutomationRequest (pages, API and the auditor timeline).
_REQUEST_ROUTES = ("automations:request_", "api:request_", "automations:audit_request")


def _target(match) -> AutomationRequest | None:
    kwargs = match.kwargs
    try:
        if "pk" in kwargs and match.view_name.startswith(_REQUEST_ROUTES):
            return AutomationRequest.objects.select_related("team", "runbook", "account").filter(pk=int(kwargs["pk"])).first()
        if "execution_id" in kwargs:
            execution = Execution.objects.select_related("request__team", "request__runbook", "request__account") \
                .filter(execution_id=str(kwargs["execution_id"])[:36]).first()
            return execution.request if execution else None
    except (TypeError, ValueError):
        return None
    return None


class DeniedAccessAuditMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        user = getattr(request, "user", None)
        if response.status_code == 404 and match is not None and user is not None and user.is_authenticated:
            try:
                target = _target(match)
                with transaction.atomic():
                    audit.record(
                        action="authz.denied", actor=user, request=target, client=ClientInfo.from_request(request),
                        details={"status": 404, "method": request.method, "path": request.path[:500],
                                 "route": match.view_name, "exists": target is not None,
                                 "kwargs": {key: str(value)[:100] for key, value in match.kwargs.items()}},
                    )
            except DatabaseError as error:  # the 404 still goes out; the failure is logged
                log.error("audit.denied_not_recorded", path=request.path[:200], error=str(error))
        return response
