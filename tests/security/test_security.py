"""Web and API security: CSRF on every write, strict API bodies, CSP without inline code, deployment headers.

reliability-security.md matrix rows 17 (mass assignment), 22 (CSRF), 23 (XSS/CSP), 25 (deploy settings).
Scope (404 outside the caller's teams) is swept in test_security_scope.py.
"""
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from automations.models import AuditEvent, AutomationRequest
from tests.conftest import require_postgres
from tests.security_helpers import project_routes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def own(world, submit):
    """A submitted request of bob's team, and ids for every route parameter, all visible to bob."""
    request = submit(justification="own request")
    return {"pk": request.pk, "policy_pk": world.platform_policy.pk, "parameter": "InstanceId",
            "sequence": AuditEvent.objects.filter(request=request).values_list("sequence", flat=True).first(),
            "resource_id": world.web1, "execution_id": "00000000-0000-0000-0000-000000000000",
            "figure": "busiest-targets", "fmt": "csv",
            "request": request}


def _is_csrf_refusal(response) -> bool:
    if response.status_code != 403:
        return False
    if response.get("Content-Type", "").startswith("application/json"):
        return response.json().get("code") == "csrf_failed"
    # Django's CSRF page, or DRF's refusal rendered by a non-JSON renderer (the schema view's YAML).
    return b"CSRF verification failed" in response.content or b"CSRF Failed" in response.content


class TestCsrf:
    def test_every_post_with_a_session_and_no_token_is_refused(self, world, own):
        """Every route, UI and API: a session POST without the CSRF token is a 403 and changes nothing."""
        client = Client(enforce_csrf_checks=True)
        client.force_login(world.bob)
        events_before = AuditEvent.objects.count()
        routes = project_routes()
        assert len(routes) > 20
        token = client.get("/accounts/login/").cookies["csrftoken"].value
        client.cookies.pop("csrftoken")
        for route in routes:
            url = route.url(**{name: own[name] for name in route.params})

            def post(**headers):
                return client.post(url, data=json.dumps({"comment": "x"}) if route.is_api else {"comment": "x"},
                                   content_type="application/json" if route.is_api else
                                   "application/x-www-form-urlencoded", **headers)

            response = post()
            if response.status_code == 403 and not _is_csrf_refusal(response) \
                    and response["Content-Type"].startswith("text/html"):
                # An HTML-rendered DRF view (the API docs) answers with the site's plain 403 page: show
                # that the token is what it lacked. The route is GET-only, so with the token the answer
                # is 405 and nothing runs.
                client.cookies["csrftoken"] = token
                assert post(HTTP_X_CSRFTOKEN=token).status_code == 405, url
                client.cookies.pop("csrftoken")
                continue
            assert _is_csrf_refusal(response), f"POST {url} without a CSRF token answered {response.status_code}"
        own["request"].refresh_from_db()
        assert own["request"].status == "submitted"
        assert AuditEvent.objects.count() == events_before

    def test_session_api_write_with_the_token_passes_csrf(self, world, own):
        # The same call with the token gets through CSRF (so the refusals above were CSRF, not something else).
        client = APIClient(enforce_csrf_checks=True)
        client.force_login(world.bob)
        token = client.get("/accounts/login/").cookies["csrftoken"].value
        response = client.post(f"/api/v1/requests/{own['pk']}/approve/", {"comment": "ok"}, format="json",
                               HTTP_X_CSRFTOKEN=token)
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "approved"

    def test_token_auth_needs_no_csrf_token(self, world, own):
        from rest_framework.authtoken.models import Token

        client = APIClient(enforce_csrf_checks=True)
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.bob).key}")
        response = client.post(f"/api/v1/requests/{own['pk']}/reject/", {"comment": "no"}, format="json")
        assert response.status_code == 200 and response.json()["status"] == "rejected"

    def test_login_form_needs_csrf(self, world):
        response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "alice",
                                                                             "password": "delegate-test"})
        assert _is_csrf_refusal(response)
        assert not AuditEvent.objects.filter(action="login.ok").exists()


def _api_write_operations() -> list[tuple[str, str]]:
    """(method, path template) of every write operation in the OpenAPI schema."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted((method, path) for path, operations in schema["paths"].items()
                  for method in operations if method in ("post", "put", "patch", "delete"))


class TestStrictApiBodies:
    def test_the_write_operations_are_the_ones_tested_here(self):
        assert _api_write_operations() == [
            ("post", "/api/v1/requests/"), ("post", "/api/v1/requests/bulk-approve/"),
            ("post", "/api/v1/requests/{id}/approve/"),
            ("post", "/api/v1/requests/{id}/cancel/"), ("post", "/api/v1/requests/{id}/comments/"),
            ("post", "/api/v1/requests/{id}/reject/"), ("post", "/api/v1/requests/{id}/send-back/"),
            ("post", "/api/v1/requests/{id}/withdraw/"),
        ], "a new write endpoint: add it to TestStrictApiBodies"

    @pytest.mark.parametrize("method, path", _api_write_operations())
    @pytest.mark.parametrize("extra", [
        {"status": "approved"}, {"requester": 1}, {"fingerprint": "0" * 64}, {"execution_id": "x"},
        {"client_token": "00000000-0000-0000-0000-000000000000"}, {"approvals": []}, {"team_id": 2},
        {"automation_role_arn": "arn:aws:iam::999999999999:role/Admin"}, {"unexpected": True},
    ])
    def test_unknown_or_read_only_keys_are_400_and_change_nothing(self, world, own, method, path, extra):
        actor = world.alice if path == "/api/v1/requests/" or path.endswith("withdraw/") else world.bob
        client = APIClient()
        client.force_authenticate(actor)
        body = {"runbook": world.runbook.pk, "parameters": {"InstanceId": [world.web1]}} \
            if path == "/api/v1/requests/" else {}
        before = (AutomationRequest.objects.count(), AuditEvent.objects.count())
        response = getattr(client, method)(path.replace("{id}", str(own["pk"])), {**body, **extra}, format="json")
        assert response.status_code == 400, (path, extra, response.content)
        payload = response.json()
        assert payload["code"] == "invalid"
        assert payload["errors"] == {key: ["Unknown or read-only field."] for key in extra}
        assert (AutomationRequest.objects.count(), AuditEvent.objects.count()) == before
        own["request"].refresh_from_db()
        assert own["request"].status == "submitted"

    def test_every_response_field_is_refused_on_create(self, world, sb):
        from automations.api.serializers import RequestCreateInput, RequestSerializer

        client = APIClient()
        client.force_authenticate(world.alice)
        read_only = set(RequestSerializer().fields) - set(RequestCreateInput().fields)
        assert {"status", "requester", "fingerprint", "client_token", "approvals", "execution"} <= read_only
        for field in sorted(read_only):
            response = client.post("/api/v1/requests/", {"runbook": world.runbook.pk, field: None}, format="json")
            assert response.status_code == 400 and field in response.json()["errors"], field
        assert not AutomationRequest.objects.exists()

    @pytest.mark.parametrize("body", [[], "text", 3, None])
    def test_a_body_that_is_not_an_object_is_400(self, world, own, body):
        client = APIClient()
        client.force_authenticate(world.bob)
        response = client.post(f"/api/v1/requests/{own['pk']}/approve/", json.dumps(body),
                               content_type="application/json")
        assert response.status_code == 400 and response.json()["code"] in ("invalid", "parse_error")

    def test_form_encoded_bodies_are_refused(self, world, own):
        client = APIClient()
        client.force_authenticate(world.bob)
        response = client.post(f"/api/v1/requests/{own['pk']}/approve/", {"comment": "x"})  # multipart
        assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"

    @pytest.mark.parametrize("query", ["stauts=failed", "status=nope", "mine=perhaps", "team=../x"])
    def test_unknown_or_malformed_query_parameters_are_400(self, world, query):
        client = APIClient()
        client.force_authenticate(world.bob)
        response = client.get(f"/api/v1/requests/?{query}")
        assert response.status_code == 400 and response.json()["code"] == "invalid"

    def test_unmatched_api_urls_answer_json(self, world):
        client = APIClient()
        client.force_authenticate(world.bob)
        response = client.get("/api/v1/requests/not-a-number/")
        assert response.status_code == 404
        assert response.json() == {"code": "not_found", "detail": "Not found."}

    def test_missing_credentials_are_401_with_a_challenge(self, db):
        response = APIClient().get("/api/v1/requests/")
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token"
        assert response.json()["code"] == "not_authenticated"


class TestSchema:
    def test_spectacular_validates_without_warnings(self, tmp_path):
        from django.core.management import call_command

        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
        text = (tmp_path / "schema.yml").read_text()
        assert "additionalProperties: false" in text  # strict bodies are declared as such

    def test_every_operation_documents_its_errors(self):
        from drf_spectacular.generators import SchemaGenerator

        schema = SchemaGenerator().get_schema(request=None, public=True)
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                codes = set(operation["responses"])
                assert {"401", "403"} <= codes, (method, path)
                if "{" in path:
                    assert "404" in codes, (method, path)
                if method == "post":
                    assert {"400", "415"} <= codes, (method, path)
                for code, response in operation["responses"].items():
                    if code.startswith(("4", "5")) and code != "414":  # 414 comes from gunicorn
                        assert response["content"]["application/json"]["schema"] == \
                            {"$ref": "#/components/schemas/Error"}, (method, path, code)


#
# Content Security Policy and templates
#

TEMPLATE_DIRS = sorted((ROOT / "automations").glob("**/templates"))
_COMMENTS = re.compile(r"{%\s*comment\s*%}.*?{%\s*endcomment\s*%}|{#.*?#}", re.DOTALL)
_FORBIDDEN = {
    "inline <script> (no src)": re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>", re.IGNORECASE),
    "inline <style>": re.compile(r"<style\b", re.IGNORECASE),
    "style= attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "on*= event handler": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "htmx hx-on handler": re.compile(r"\shx-on", re.IGNORECASE),
    "javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "|safe filter": re.compile(r"\|\s*safe\b"),
    "autoescape off": re.compile(r"{%\s*autoescape\s+off"),
}
# Python that marks strings safe, with the reason each one is acceptable.
SAFE_MARKING_ALLOWED = {
    "automations/runbooks/markdown.py": "the output of nh3.clean() with an allow-list of tags and attributes",
}


def test_templates_have_no_inline_code_and_no_unescaped_output():
    files = [path for directory in TEMPLATE_DIRS for path in directory.rglob("*.html")]
    assert len(files) > 10
    problems = []
    for path in files:
        text = _COMMENTS.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())
        for what, pattern in _FORBIDDEN.items():
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert problems == []


def test_python_marks_nothing_safe_except_the_sanitiser():
    marking = re.compile(r"\bmark_safe\(|\bSafeString\(|\bSafeText\(")
    found = {str(path.relative_to(ROOT)) for path in (ROOT / "automations").rglob("*.py")
             if marking.search(path.read_text())}
    assert found <= set(SAFE_MARKING_ALLOWED), found - set(SAFE_MARKING_ALLOWED)


# SQL written as text, with the reason each use is safe (no user input reaches the text).
RAW_SQL_ALLOWED = {
    "automations/audit/search.py": "the COPY export: expressions built from the fixed EXPORT_FIELDS list; "
                                   "filter values travel as query parameters",
}


def test_no_raw_sql_outside_the_reviewed_places():
    # The ORM, or cursor.execute with parameters; raw()/extra()/RawSQL only where reviewed above.
    raw = re.compile(r"\.raw\(|\.extra\(|\bRawSQL\(")
    found = {str(path.relative_to(ROOT)) for path in (ROOT / "automations").rglob("*.py") if raw.search(path.read_text())}
    assert found <= set(RAW_SQL_ALLOWED), found - set(RAW_SQL_ALLOWED)


def _nonce(response) -> str:
    csp = response["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    return re.search(r"'nonce-([^']+)'", csp).group(1)


@pytest.mark.parametrize("url", ["/accounts/login/", "/runbooks/", "/requests/", "/approvals/", "/audit/",
                                 "/api/docs/"])
def test_rendered_pages_carry_csp_with_a_fresh_nonce_on_every_script(world, url):
    client = Client()
    client.force_login(world.bob)
    first, second = client.get(url), client.get(url)
    assert first.status_code == 200, url
    nonce = _nonce(first)
    assert nonce != _nonce(second)  # per response, never reused
    scripts = re.findall(rb"<script[^>]*>", first.content)
    assert scripts, url
    for tag in scripts:
        assert b" src=" in tag and f'nonce="{nonce}"'.encode() in tag, tag
    assert not re.search(rb"\sstyle\s*=|<style", first.content), url


def test_swagger_start_script_is_served_as_a_file(world):
    client = Client()
    client.force_login(world.bob)
    page = client.get("/api/docs/")
    src = re.search(rb'<script src="([^"]*script=[^"]*)"', page.content).group(1).decode().replace("&amp;", "&")
    script = client.get(src)
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


#
# Production settings
#

def _production_env(**extra) -> dict:
    env = {**os.environ, "DELEGATE_SECURE": "true", "DJANGO_DEBUG": "false",
           "DJANGO_SECRET_KEY": secrets.token_urlsafe(64), "DJANGO_SETTINGS_MODULE": "portal.settings",
           "LOG_LEVEL": "WARNING", **extra}
    # Set in this process by the browser tests (Playwright's event loop); never in a deployment.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


def test_check_deploy_is_clean_under_production_settings():
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=_production_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_with_a_weak_key():
    # The check above can fail: with a weak key (or with DEBUG on) it does. A missing or published
    # default key does not even start (tests/test_deployment.py).
    env = _production_env(DJANGO_SECRET_KEY="short-and-weak")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "security.W009" in result.stderr


_PROBE = r"""
import json, django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
client = Client()
plain = client.get("/accounts/login/")
page = client.get("/accounts/login/", secure=True)
user = get_user_model().objects.get(username="alice")
user.set_password("probe-password-1"); user.save()
login = client.post("/accounts/login/", {"username": "alice", "password": "probe-password-1"}, secure=True)
logged_in = client.get("/runbooks/", secure=True)
def cookie(morsel):
    return {key: morsel[key] for key in ("secure", "httponly", "samesite")}
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location", "")],
    "headers": dict(page.headers),
    "csrf_cookie": cookie(page.cookies["csrftoken"]),
    "session_cookie": cookie(login.cookies["sessionid"]),
    "logged_in_status": logged_in.status_code,
}))
"""


@pytest.mark.django_db(transaction=True)
def test_production_settings_send_the_security_headers_and_secure_cookies():
    require_postgres("the probe process reads the test database")
    from tests import factories as f

    f.UserFactory(username="alice")
    database = connection.settings_dict
    url = f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}"
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=_production_env(DATABASE_URL=url),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["plain"] == [301, "https://testserver/accounts/login/"]
    headers = probe["headers"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert probe["csrf_cookie"] == {"secure": True, "httponly": "", "samesite": "Lax"}
    assert probe["session_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert probe["logged_in_status"] == 200
