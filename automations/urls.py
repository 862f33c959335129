from django.urls import path

from automations import views

app_name = "automations"
urlpatterns = [
    path("", views.home, name="home"),
    path("runbooks/", views.catalog, name="catalog"),
    path("runbooks/<int:policy_pk>/request/", views.request_new, name="request_new"),
    path("requests/", views.request_list, name="request_list"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/status/", views.request_status_partial, name="request_status"),
    path("requests/<int:pk>/approve/", views.request_approve, name="request_approve"),
    path("requests/<int:pk>/reject/", views.request_reject, name="request_reject"),
    path("requests/<int:pk>/withdraw/", views.request_withdraw, name="request_withdraw"),
    path("requests/<int:pk>/cancel/", views.request_cancel, name="request_cancel"),
    path("requests/<int:pk>/rerun/", views.request_rerun, name="request_rerun"),
    path("approvals/", views.approval_queue, name="approval_queue"),
    path("audit/", views.audit_list, name="audit_list"),
]
