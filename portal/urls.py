"""Root URL configuration: pages, sign-in, admin, API, schema and operations endpoints."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from automations.api import operations
from automations.identity import sso
from automations.web import requests as views

urlpatterns = [
    path("", include("automations.web.urls")),
    path("accounts/login/", sso.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("oidc/", include(sso.urlpatterns)),
    # One sign-in page for everyone (lockout, audit, SSO, the local-password switch); `next` is kept.
    path("admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("automations.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file: no inline script under our CSP.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", operations.healthz, name="healthz"),
    path("readyz", operations.readyz, name="readyz"),
    path("metrics", operations.metrics_view, name="metrics"),
    path("robots.txt", views.robots),
]

# Under /api/ a URL that matches nothing, or a crash, still answers JSON with a stable code.
handler404 = "automations.api.errors.page_not_found"
handler500 = "automations.api.errors.server_error"
