"""REST API v1: one view per action; reads go through selectors, writes through services."""
from django.db import transaction
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from automations import audit, selectors, services
from automations.api import serializers as s
from automations.audit import ClientInfo
from automations.audit_search import AuditEventFilter, export_csv, export_jsonl
from automations.errors import InvalidRequest
from automations.models import Execution, Runbook, RunbookVersion

ERROR = inline_serializer("Error", {"code": serializers.CharField(), "detail": serializers.CharField(),
                                    "errors": serializers.DictField(required=False)})


class RunbookListApi(generics.ListAPIView):
    """Runbooks the caller's teams may request, with the policy that applies."""

    serializer_class = s.RunbookPolicySerializer

    def get_queryset(self):
        return selectors.runbook_policies_for(self.request.user)


class RunbookDetailApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("version", str, description="default, latest or a version number")],
        responses={200: s.RunbookDetailSerializer, 404: ERROR},
    )
    def get(self, request, pk: int):
        """One runbook with the parameter schema of the chosen version (the default unless asked)."""
        offered = selectors.runbook_policies_for(request.user).values("runbook_id")
        runbook = get_object_or_404(Runbook.objects.filter(pk__in=offered), pk=pk)
        choice = request.query_params.get("version", "default")
        number = {"default": runbook.default_version, "latest": runbook.latest_version}.get(choice, choice)
        version = get_object_or_404(RunbookVersion, runbook=runbook, version=number)
        return Response(s.RunbookDetailSerializer(runbook, context={"version": version}).data)


class RequestPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50


class RequestListCreateApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("status", str), OpenApiParameter("team", str),
                    OpenApiParameter("cursor", str), OpenApiParameter("mine", bool)],
        responses={200: s.RequestSerializer(many=True)},
    )
    def get(self, request):
        """Requests visible to the caller: their own, their teams' if they lead, all for auditors."""
        queryset = selectors.requests_visible_to(request.user).prefetch_related("approvals__approver")
        if request.query_params.get("status"):
            queryset = queryset.filter(status=request.query_params["status"])
        if request.query_params.get("team"):
            queryset = queryset.filter(team__name=request.query_params["team"])
        if request.query_params.get("mine") in ("1", "true"):
            queryset = queryset.filter(requester=request.user)
        paginator = RequestPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(s.RequestSerializer(page, many=True).data)

    @extend_schema(request=s.RequestCreateInput, responses={201: s.RequestSerializer, 400: ERROR, 403: ERROR})
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
            alarm_name=data["alarm_name"], justification=data["justification"], rerun_of=rerun_of,
            client=ClientInfo.from_request(request),
        )
        created = selectors.requests_visible_to(request.user).get(pk=created.pk)
        return Response(s.RequestSerializer(created).data, status=status.HTTP_201_CREATED)


class RequestDetailApi(APIView):
    @extend_schema(responses={200: s.RequestSerializer, 404: ERROR})
    def get(self, request, pk: int):
        visible = selectors.requests_visible_to(request.user).prefetch_related("approvals__approver")
        return Response(s.RequestSerializer(get_object_or_404(visible, pk=pk)).data)


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


@extend_schema(request=s.DecisionInput, responses={200: s.RequestSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
class RequestApproveApi(_RequestActionApi):
    def act(self, request, automation_request, data):
        services.request_approve(request=automation_request, actor=request.user, comment=data["comment"],
                                 client=ClientInfo.from_request(request))


@extend_schema(request=s.DecisionInput, responses={200: s.RequestSerializer, 403: ERROR, 404: ERROR, 409: ERROR})
class RequestRejectApi(_RequestActionApi):
    def act(self, request, automation_request, data):
        services.request_reject(request=automation_request, actor=request.user, comment=data["comment"],
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
    ordering = "-sequence"
    page_size = 100


class AuditListApi(generics.ListAPIView):
    """The audit log, newest first, with allow-listed filters and cursor pagination."""

    serializer_class = s.AuditEventSerializer
    pagination_class = AuditPagination
    filterset_class = AuditEventFilter

    def get_queryset(self):
        return selectors.audit_events_visible_to(self.request.user)


class AuditExportApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["csv", "jsonl"])],
        responses={(200, "text/csv"): OpenApiTypes.STR, (200, "application/x-ndjson"): OpenApiTypes.STR},
    )
    def get(self, request):
        """Stream the filtered log as CSV or JSON Lines; the export itself is audited."""
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "jsonl"):
            raise InvalidRequest("format is csv or jsonl.", errors={"format": ["Use csv or jsonl."]})
        events = AuditEventFilter(request.query_params, queryset=selectors.audit_events_visible_to(request.user))
        if not events.is_valid():
            raise InvalidRequest("Some filters are not valid.", errors={k: list(v) for k, v in events.errors.items()})
        filters = {key: value for key, value in request.query_params.items() if key != "format"}
        with transaction.atomic():
            audit.record(action="audit.exported", actor=request.user, client=ClientInfo.from_request(request),
                         details={"format": fmt, "filters": filters})
        stream = export_csv(events.qs) if fmt == "csv" else export_jsonl(events.qs)
        response = StreamingHttpResponse(stream, content_type="text/csv" if fmt == "csv" else "application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="delegate-audit.{fmt}"'
        return response
