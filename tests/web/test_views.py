"""The web UI through Django's test client: the same lifecycle as the API, and the same scoping."""
import contextlib
import re

import pytest

from automations.models import AuditEvent, AutomationRequest
from tests.processes import free_port


@pytest.fixture
def login(client):
    def _login(user):
        client.force_login(user)
        return client
    return _login


def test_login_page_renders_with_csp_and_nonce(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "frame-ancestors 'none'" in csp
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert f'nonce="{nonce}"'.encode() in response.content
    assert response["X-Frame-Options"] == "DENY"


def test_anonymous_users_are_sent_to_login(client):
    assert client.get("/runbooks/").status_code == 302


def test_requester_previews_then_submits_and_lead_approves(world, sb, login):
    client = login(world.alice)
    catalog = client.get("/runbooks/")
    assert b"AWS-RestartEC2Instance" in catalog.content
    url = f"/runbooks/{world.platform_policy.runbook_id}/request/"
    form = client.get(url)
    assert form.status_code == 200 and b'name="param_InstanceId"' in form.content
    assert b'name="param_AutomationAssumeRole"' not in form.content
    preview = client.post(url, {"version": "default", "param_InstanceId": world.web1, "justification": "why not",
                                "preview": "1"})
    assert preview.status_code == 200
    assert b"exactly what will be sent" in preview.content
    assert world.account.automation_role_arn.encode() in preview.content
    assert not AutomationRequest.objects.exists()
    submitted = client.post(url, {"version": "default", "param_InstanceId": world.web1, "submit": "1"})
    request = AutomationRequest.objects.get()
    assert submitted.status_code == 302 and submitted["Location"] == f"/requests/{request.pk}/"

    lead = login(world.bob)
    queue = lead.get("/approvals/")
    assert f"#{request.pk}".encode() in queue.content
    detail = lead.get(f"/requests/{request.pk}/")
    assert b">Approve</button>" in detail.content
    lead.post(f"/requests/{request.pk}/approve/", {"comment": "fine"})
    request.refresh_from_db()
    assert request.status == "approved"
    partial = lead.get(f"/requests/{request.pk}/status/")
    assert partial.status_code == 200 and b"Approved" in partial.content


def test_form_shows_service_errors_per_field(world, sb, login):
    client = login(world.alice)
    url = f"/runbooks/{world.platform_policy.runbook_id}/request/"
    response = client.post(url, {"version": "default", "param_InstanceId": world.etl1, "preview": "1"})
    assert response.status_code == 200
    assert b"Not in your team" in response.content
    assert not AutomationRequest.objects.exists()


def test_other_teams_pages_are_404(world, sb, login, submit):
    request = submit()
    client = login(world.erin)
    assert client.get(f"/requests/{request.pk}/").status_code == 404
    assert client.post(f"/requests/{request.pk}/approve/").status_code == 404
    # erin's team (data) offers the same runbook; asking for it as platform's is what she may not do.
    assert client.get(f"/runbooks/{world.platform_policy.runbook_id}/request/?team=platform").status_code == 404


def test_get_cannot_change_state(world, sb, login, submit):
    request = submit()
    client = login(world.bob)
    assert client.get(f"/requests/{request.pk}/approve/").status_code == 405
    request.refresh_from_db()
    assert request.status == "submitted"


def test_auditor_sees_the_trail_escaped(world, sb, login, submit):
    request = submit(justification='<script>alert(1)</script>"><img src=x onerror=alert(2)>')
    client = login(world.carol)
    page = client.get("/audit/")
    assert page.status_code == 200 and b"request.submitted" in page.content
    detail = client.get(f"/requests/{request.pk}/")
    assert b"<script>alert(1)</script>" not in detail.content
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in detail.content
    assert b"<img src=x" not in detail.content


def test_members_do_not_get_the_audit_page(world, login):
    assert login(world.alice).get("/audit/").status_code == 403


def test_failed_login_is_audited_without_the_password(client, world):
    client.post("/accounts/login/", {"username": "alice", "password": "wrong-password-123"},
                REMOTE_ADDR="10.1.2.3", HTTP_USER_AGENT="pytest-agent")
    event = AuditEvent.objects.get(action="login.fail")
    assert event.details == {"username": "alice"}
    assert event.client_ip == "10.1.2.3" and event.user_agent == "pytest-agent"
    assert "wrong-password" not in str(AuditEvent.objects.values_list("details", flat=True))


@pytest.fixture
def celery_broker(settings):
    """use(url, **transport_options): point this process's Celery app (what /readyz checks) at a broker."""
    from portal.celery import app

    previous = (app.conf.broker_url, app.conf.broker_transport_options)

    def reset_pools():
        if app._pool is not None:
            with contextlib.suppress(Exception):
                app._pool.force_close_all()
        app._pool = None
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    def use(url: str, **options):
        app.conf.broker_url, app.conf.broker_transport_options = url, options
        reset_pools()

    yield use
    app.conf.broker_url, app.conf.broker_transport_options = previous
    reset_pools()


def test_healthz_touches_nothing(client, db):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_readyz_is_200_when_the_database_and_the_broker_answer(client, db, celery_broker, tmp_path):
    folders = {name: tmp_path / name for name in ("in", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    celery_broker("filesystem://", data_folder_in=str(folders["in"]), data_folder_out=str(folders["in"]),
                  processed_folder=str(folders["processed"]), control_folder=str(folders["control"]))
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["broker"]["status"] == "ok"
    assert body["outbox_overdue_seconds"] == 0.0


def test_readyz_is_503_when_the_broker_refuses(client, db, celery_broker):
    port = free_port()  # bound and released: nothing listens there
    celery_broker(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1, socket_timeout=1)
    response = client.get("/readyz")
    assert response.status_code == 503, response.content
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["broker"]["status"].startswith("error: ")
    assert response["Cache-Control"] == "no-store"
