"""URL routes of the server-rendered pages (namespace `automations`)."""
from django.urls import path

from automations.web import requests as views
from automations.web import approvals as views_approvals
from automations.web import runbook_page
from automations.web import audit as views_audit
from automations.web import catalog as views_catalog
from automations.web import ops as views_ops

app_name = "automations"
urlpatterns = [
    path("", views.home, name="home"),
    path("runbooks/", views_catalog.catalog, name="catalog"),
    path("runbooks/<int:pk>/", runbook_page.runbook_detail, name="runbook_detail"),
    path("runbooks/request/", views_catalog.request_choose, name="request_choose"),
    path("runbooks/<int:pk>/request/", views_catalog.request_new, name="request_new"),
    path("runbooks/<int:pk>/pick/<str:parameter>/", views_catalog.picker, name="picker"),
    path("requests/", views.request_list, name="request_list"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/status/", views.request_status_partial, name="request_status"),
    path("requests/<int:pk>/locations/<uuid:execution_id>/", views.request_location, name="request_location"),
    path("requests/<int:pk>/approve/", views.request_approve, name="request_approve"),
    path("requests/<int:pk>/reject/", views.request_reject, name="request_reject"),
    path("requests/<int:pk>/send-back/", views.request_send_back, name="request_send_back"),
    path("requests/<int:pk>/comment/", views.request_comment, name="request_comment"),
    path("requests/<int:pk>/amend/", views.request_amend, name="request_amend"),
    path("requests/<int:pk>/withdraw/", views.request_withdraw, name="request_withdraw"),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request_cancel"),
    path("requests/<int:pk>/rerun/", views.request_rerun, name="request_rerun"),
    path("approvals/", views_approvals.approval_queue, name="approval_queue"),
    path("approvals/steps/<int:pk>/", views_approvals.step_decide, name="step_decide"),
    path("approvals/bulk/", views_approvals.approve_bulk, name="approve_bulk"),
    path("approvals/delegations/", views_approvals.delegations, name="delegations"),
    path("approvals/delegations/<int:pk>/revoke/", views_approvals.delegation_revoke, name="delegation_revoke"),
    path("ops/", views_ops.ops_view, name="ops"),
    path("ops/export/<slug:figure>.<str:fmt>", views_ops.ops_export, name="ops_export"),
    path("audit/", views_audit.audit_list, name="audit_list"),
    path("audit/events/<int:sequence>/", views_audit.audit_event, name="audit_event"),
    path("audit/requests/<int:pk>/", views_audit.audit_request_timeline, name="audit_request"),
    path("audit/resources/<path:resource_id>/", views_audit.audit_resource_history, name="audit_resource"),
]
