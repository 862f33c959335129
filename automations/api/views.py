"""REST API v1: one view per action; reads go through selectors, writes through services."""
from django.db import transaction
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from automations import audit, selectors, services
from automations.api import schema  # noqa: F401  (registers the strict-body schema extension)
from automations.api import serializers as s
from automations.audit import ClientInfo
from automations.runbooks import approval_content as content_view
from automations.runbooks import identity as run_identity
from automations.audit.search import AuditEventFilter, export_csv, export_jsonl
from automations.errors import InvalidRequest
from automations.models import AuditEvent, Execution, Runbook, RunbookVersion, TeamRunbook

# The error body; automations.api.schema also adds every error status an operation can answer with.
ERROR = schema.ErrorSerializer


def _repeated(request) -> dict:
    """Every parameter is single-valued: `?status=a&status=b` is an error, not "the last one wins"."""
    return {key: ["Give this parameter once."] for key, values in request.query_params.lists() if len(values) > 1}


def _query(serializer_class, request) -> dict:
    """Validate the query string strictly (unknown or malformed parameters are a 400).

    A plain dict, not the QueryDict: DRF treats an empty form value as "absent", so `?team=` would
    silently mean "all teams"; here it is a blank value and refused.
    """
    repeated = _repeated(request)
    if repeated:
        raise InvalidRequest("Some query parameters are not valid.", errors=repeated)
    query = serializer_class(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    return query.validated_data


class RunbookListApi(generics.ListAPIView):
    """Runbooks the caller's teams may request, with the policy that applies."""

    serializer_class = s.RunbookPolicySerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return TeamRunbook.objects.none()
        _query(s.StrictQuery, self.request)
        return selectors.runbook_policies_for(self.request.user)


class RunbookDetailApi(APIView):
    @extend_schema(parameters=[s.RunbookDetailQuery], responses={200: s.RunbookDetailSerializer, 404: ERROR})
    def get(self, request, pk: int):
        """One runbook with the parameter schema of the chosen version (the default unless asked)."""
        offered = selectors.runbook_policies_for(request.user)
        runbook = get_object_or_404(Runbook.objects.filter(pk__in=offered.values("runbook_id")), pk=pk)
        choice = _query(s.RunbookDetailQuery, request)["version"]
        number = {"default": runbook.default_version, "latest": runbook.latest_version}.get(choice, choice)
        version = get_object_or_404(RunbookVersion, runbook=runbook, version=number)
        # The schema as it applies to the caller's (first) team: subject roles list that team's
        # allowed choices; needs_setup names what an admin must configure first.
        team_policy = offered.filter(runbook=runbook).select_related("team").order_by("team__name").first()
        version.parameters = run_identity.effective_schema(version, team=team_policy.team if team_policy else None)
        return Response(s.RunbookDetailSerializer(runbook, context={
            "version": version, "needs_setup": run_identity.setup_problems(version, version.parameters),
            "runs_as": run_identity.run_as_for(version, runbook.account)}).data)


class RequestPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50


class RequestListCreateApi(APIView):
    @extend_schema(operation_id="v1_requests_list", parameters=[s.RequestListQuery],
                   responses={200: s.RequestPageSerializer})
    def get(self, request):
        """Requests visible to the caller: their own, their teams' if they lead, all for auditors."""
        query = _query(s.RequestListQuery, request)
        queryset = selectors.requests_visible_to(request.user).prefetch_related("approvals__approver")
        if query.get("status"):
            queryset = queryset.filter(status=query["status"])
        if query.get("team"):
            queryset = queryset.filter(team__name=query["team"])
        if query["mine"]:
            queryset = queryset.filter(requester=request.user)
        paginator = RequestPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(s.RequestSerializer(page, many=True).data)

    @extend_schema(request=s.RequestCreateInput,
                   responses={201: s.RequestSerializer, 400: ERROR, 403: ERROR, 404: ERROR})
    def post(self, request):
        """Submit a request. Roles, document name and version are never taken from the client."""
        payload = s.RequestCreateInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        policies = selectors.runbook_policies_for(request.user).filter(runbook_id=data["runbook"])
        if data.get("team"):
            policies = policies.filter(team__name=data["team"])
        matching = list(policies.select_related("team")[:2])
        if not matching:
            raise InvalidRequest("None of your teams may request this runbook.", code="runbook_not_offered",
                                 errors={"runbook": ["Not offered to your teams."]})
        if len(matching) > 1:
            raise InvalidRequest("Several of your teams offer this runbook; say which team.", code="team_required",
                                 errors={"team": ["Required."]})
        rerun_of = None
        if data.get("rerun_of"):
            rerun_of = get_object_or_404(selectors.requests_visible_to(request.user), pk=data["rerun_of"])
        created = services.request_submit(
            actor=request.user, team=matching[0].team, runbook_id=data["runbook"], version=data["version"],
            parameters=data["parameters"], target_parameter_name=data["target_parameter_name"],
            targets=data["targets"], max_concurrency=data["max_concurrency"], max_errors=data["max_errors"],
            alarm_name=data["alarm_name"], justification=data["justification"],
            ticket_reference=data["ticket_reference"], rerun_of=rerun_of,
            client=ClientInfo.from_request(request), run_at=data["run_at"],
            check_overlap=not data["confirm_overlap"],
            location_targets=data["location_targets"], location_regions=data["location_regions"],
            location_max_concurrency=data["location_max_concurrency"], location_max_errors=data["location_max_errors"],
        )
        created = selectors.requests_visible_to(request.user).get(pk=created.pk)
        return Response(s.RequestSerializer(created).data, status=status.HTTP_201_CREATED)


class RequestDetailApi(APIView):
    @extend_schema(responses={200: s.RequestDetailSerializer, 400: ERROR, 404: ERROR}, parameters=[s.RequestDetailQuery])
    def get(self, request, pk: int):
        visible = selectors.requests_visible_to(request.user).prefetch_related("approvals__approver")
        query = _query(s.RequestDetailQuery, request)
        return Response(s.RequestDetailSerializer(get_object_or_404(visible, pk=pk),
                                                  context={"locations_query": query}).data)


class RequestContentApi(APIView):
    @extend_schema(responses={200: s.RequestContentSerializer, 404: ERROR})
    def get(self, request, pk: int):
        """The steps of exactly the content the request bound (what an approver approves) and a
        diff against the content of the team's last run of this runbook."""
        item = get_object_or_404(selectors.requests_visible_to(request.user).select_related("runbook_version"), pk=pk)
        view = content_view.approval_view(item)
        return Response(s.RequestContentSerializer({
            **view, "document_hash": item.document_hash,
            "diff_against_request": view["diff_against"].pk if view["diff_against"] else None,
        }).data)


class _RequestActionApi(APIView):
    input_serializer = s.DecisionInput

    def act(self, request, automation_request, data):
        raise NotImplementedError

    def post(self, request, pk: int):
        automation_request = get_object_or_404(selectors.requests_visible_to(request.user), pk=pk)
        payload = self.input_serializer(data=request.data)
        payload.is_valid(raise_exception=True)
        self.act(request, automation_request, payload.validated_data)
        fresh = selectors.requests_visible_to(request.user).get(pk=pk)
        return Response(s.RequestSerializer(fresh).data)


# 400: an emergency override without a comment (code `reason_required`), which the body's schema cannot express.
@extend_schema(request=s.ApproveInput,
               responses={200: s.RequestSerializer, 400: ERROR, 403: ERROR, 404: ERROR, 409: ERROR})
class RequestApproveApi(_RequestActionApi):
    input_serializer = s.ApproveInput

    def act(self, request, automation_request, data):
        services.request_approve(request=automation_request, actor=request.user, comment=data["comment"],
                                 emergency=data["emergency"], client=ClientInfo.from_request(request))


class RequestBulkApproveApi(APIView):
    @extend_schema(request=s.BulkApproveInput, responses={200: s.BulkApproveOutput, 400: ERROR})
    def post(self, request):
        """Approve identical low-risk requests together, each on its own (docs/approvals-and-policy.md).

        400 with code bulk_size, bulk_not_low_risk or bulk_not_identical approves nothing; otherwise
        each request has a result: ok, or its own code (self_approval, changed_since_viewed, not_found…).
        """
        payload = s.BulkApproveInput(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        wanted = list(dict.fromkeys(item["id"] for item in data["requests"]))
        seen = {item["id"]: item["fingerprint"] for item in data["requests"]}
        found = {item.pk: item for item in selectors.requests_visible_to(request.user).filter(pk__in=wanted)}
        outcomes = {outcome.request_id: outcome for outcome in services.requests_approve_bulk(
            requests=[found[pk] for pk in wanted if pk in found], actor=request.user, comment=data["comment"],
            expected_fingerprints=seen, client=ClientInfo.from_request(request))}
        results = [{"id": pk, "ok": outcomes[pk].ok, "status": outcomes[pk].status, "code": outcomes[pk].code,
                    "detail": outcomes[pk].detail} if pk in outcomes else
                   {"id": pk, "ok": False, "status": "", "code": "not_found", "detail": "Not found."} for pk in wanted]
        return Response({"results": results})


@extend_schema(request=s.DecisionInput, responses={200: s.RequestSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
class RequestRejectApi(_RequestActionApi):
    def act(self, request, automation_request, data):
        services.request_reject(request=automation_request, actor=request.user, comment=data["comment"],
                                client=ClientInfo.from_request(request))


@extend_schema(request=s.DecisionInput, responses={200: s.RequestSerializer, 400: ERROR, 403: ERROR, 404: ERROR,
                                                    409: ERROR})
class RequestSendBackApi(_RequestActionApi):
    """Send the request back to the requester for changes; the comment (the reason) is required."""

    def act(self, request, automation_request, data):
        services.request_send_back(request=automation_request, actor=request.user, comment=data["comment"],
                                   client=ClientInfo.from_request(request))


@extend_schema(request=s.DecisionInput, responses={200: s.RequestSerializer, 400: ERROR, 404: ERROR})
class RequestCommentApi(_RequestActionApi):
    """Add a comment to the request's thread (anyone who may see the request)."""

    def act(self, request, automation_request, data):
        services.request_comment(request=automation_request, actor=request.user, body=data["comment"],
                                 client=ClientInfo.from_request(request))


@extend_schema(request=None, responses={200: s.RequestSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
class RequestWithdrawApi(_RequestActionApi):
    input_serializer = s.StrictSerializer

    def act(self, request, automation_request, data):
        services.request_withdraw(request=automation_request, actor=request.user,
                                  client=ClientInfo.from_request(request))


@extend_schema(request=s.CancelInput, responses={200: s.RequestSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
class RequestCancelApi(_RequestActionApi):
    input_serializer = s.CancelInput

    def act(self, request, automation_request, data):
        services.request_cancel(request=automation_request, actor=request.user, reason=data["reason"],
                                client=ClientInfo.from_request(request))


class ExecutionDetailApi(APIView):
    @extend_schema(responses={200: s.ExecutionSerializer, 404: ERROR})
    def get(self, request, execution_id: str):
        """An execution (with its steps) of a request the caller can see."""
        visible = selectors.requests_visible_to(request.user).values("pk")
        execution = get_object_or_404(Execution.objects.filter(request_id__in=visible), execution_id=execution_id)
        return Response(s.ExecutionSerializer(execution).data)


class AuditPagination(CursorPagination):
    """Keyset pages on sequence (indexed, unique): no COUNT(*), no OFFSET, stable under inserts."""

    ordering = "-sequence"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters

    def decode_cursor(self, request):
        # DRF answers a garbled cursor with 404, or a 500 for a non-numeric position; make it a 400.
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            cursor = None
            valid = False
        else:
            valid = cursor is None or (cursor.position is None or str(cursor.position).isdigit())
        if not valid:
            raise InvalidRequest("The cursor is not valid; start again from the first page.", code="invalid_cursor",
                                 errors={"cursor": ["Invalid cursor."]})
        return cursor


def _strict_filters(request, *, allowed: set[str]) -> None:
    """django-filter ignores unknown parameters and blank values; a misspelt or empty filter must not
    silently widen an auditor's search to everything."""
    errors = _repeated(request)
    for key, value in request.query_params.items():
        if key not in AuditEventFilter.base_filters and key not in allowed:
            errors[key] = ["Unknown query parameter."]
        elif value == "":
            errors[key] = ["This field may not be blank."]
        elif key == AuditPagination.page_size_query_param and not (
                value.isascii() and value.isdigit() and 1 <= int(value) <= AuditPagination.max_page_size):
            # DRF would quietly fall back to the default page size.
            errors[key] = [f"A whole number from 1 to {AuditPagination.max_page_size}."]
    if errors:
        raise InvalidRequest("Some filters are not valid.", errors=errors)


class AuditListApi(generics.ListAPIView):
    """The audit log, newest first, with allow-listed filters and cursor pagination."""

    serializer_class = s.AuditEventSerializer
    pagination_class = AuditPagination
    filterset_class = AuditEventFilter

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return AuditEvent.objects.none()
        return selectors.audit_events_visible_to(self.request.user)

    def list(self, request, *args, **kwargs):
        _strict_filters(request, allowed={"cursor", "limit", "format"})
        # Plain rows rather than model instances through the serializer: same JSON, about half
        # the time per page (bench/audit.py; the serializer still documents the schema).
        fields = s.AuditEventSerializer.Meta.fields
        columns = [{"actor": "actor_id", "request": "request_id"}.get(name, name) for name in fields]
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()).values(*columns))
        rows = [{name: row[column] for name, column in zip(fields, columns)} for row in page]
        return self.get_paginated_response(rows)


class _JsonOnly(BaseContentNegotiation):
    """The export's `format` parameter names the file format; DRF would read it as a renderer and 404."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class AuditExportApi(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _JsonOnly

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["csv", "jsonl"]),
                    *schema.filterset_parameters(AuditEventFilter)],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/x-ndjson"): OpenApiTypes.STR},
    )
    def get(self, request):
        """Stream the filtered log as CSV or JSON Lines; the export is audited, and covers what came before it."""
        _strict_filters(request, allowed={"format"})
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            raise InvalidRequest("format is csv or jsonl.", errors={"format": ["Use csv or jsonl."]})
        events = AuditEventFilter(request.query_params, queryset=selectors.audit_events_visible_to(request.user))
        if not events.is_valid():
            raise InvalidRequest("Some filters are not valid.", errors={k: list(v) for k, v in events.errors.items()})
        filters = {key: value[:300] for key, value in list(request.query_params.items())[:30] if key != "format"}
        with transaction.atomic():
            exported = audit.record(action="audit.exported", actor=request.user, client=ClientInfo.from_request(request),
                                    details={"format": fmt, "filters": filters})
        # Everything before the export's own event: re-running the same export reproduces the file.
        queryset = events.qs.filter(sequence__lt=exported.sequence)
        stream = export_csv(queryset) if fmt == "csv" else export_jsonl(queryset)
        response = StreamingHttpResponse(stream, content_type="text/csv; charset=utf-8" if fmt == "csv"
                                         else "application/x-ndjson; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="delegate-audit-{exported.sequence - 1}.{fmt}"'
        response["Cache-Control"] = "no-store"
        return response
