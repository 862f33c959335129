"""URL routes of the REST API v1, mounted at /api/v1/."""
from django.urls import path

from automations.api import views

app_name = "api"
urlpatterns = [
    path("runbooks/", views.RunbookListApi.as_view(), name="runbook_list"),
    path("runbooks/<int:pk>/", views.RunbookDetailApi.as_view(), name="runbook_detail"),
    path("requests/", views.RequestListCreateApi.as_view(), name="request_list"),
    path("requests/bulk-approve/", views.RequestBulkApproveApi.as_view(), name="request_bulk_approve"),
    path("requests/<int:pk>/", views.RequestDetailApi.as_view(), name="request_detail"),
    path("requests/<int:pk>/content/", views.RequestContentApi.as_view(), name="request_content"),
    path("requests/<int:pk>/approve/", views.RequestApproveApi.as_view(), name="request_approve"),
    path("requests/<int:pk>/reject/", views.RequestRejectApi.as_view(), name="request_reject"),
    path("requests/<int:pk>/send-back/", views.RequestSendBackApi.as_view(), name="request_send_back"),
    path("requests/<int:pk>/comments/", views.RequestCommentApi.as_view(), name="request_comment"),
    path("requests/<int:pk>/withdraw/", views.RequestWithdrawApi.as_view(), name="request_withdraw"),
    path("requests/<int:pk>/cancel/", views.RequestCancelApi.as_view(), name="request_cancel"),
    path("executions/<str:execution_id>/", views.ExecutionDetailApi.as_view(), name="execution_detail"),
    path("audit/", views.AuditListApi.as_view(), name="audit_list"),
    path("audit/export/", views.AuditExportApi.as_view(), name="audit_export"),
]
