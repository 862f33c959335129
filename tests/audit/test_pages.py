"""Hostile strings in every field are escaped on every auditor page; CSP is sent; no template opts out (row 23)."""
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from rest_framework.test import APIClient

from automations.models import AuditEvent, Execution
from tests.audit_helpers import seed_chain

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
HOSTILE = f"{SCRIPT}{IMG}"
RAW_MARKERS = ("<script>alert(1)", "<img src=x onerror")


def hostile_fields(request_id=None) -> dict:
    """A value an attacker controls in every text field the audit log stores."""
    return {
        "actor_name": HOSTILE[:150], "action": f"x.{IMG}"[:60], "team": f"t{IMG}"[:64], "runbook": HOSTILE,
        "resources": [f"i-{SCRIPT}", IMG], "account_id": "<b>x</b>", "region": f"r{IMG}"[:32],
        "details": {"comment": HOSTILE, IMG: [SCRIPT], "reason": IMG}, "user_agent": HOSTILE,
        "role_session_name": f"s{IMG}"[:64], "source_identity": HOSTILE, "aws_request_id": HOSTILE,
        "execution_id": f"e{IMG}"[:36], "request_id": request_id,
    }


def assert_escaped(response):
    assert response.status_code == 200, response.status_code
    html = response.content.decode()
    for marker in RAW_MARKERS:
        assert marker not in html, marker
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&lt;script&gt;" in html
    csp = response["Content-Security-Policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in re.sub(r'<script src="/static/[^"]+" nonce="[^"]+" defer></script>', "", html)


@pytest.fixture
def hostile_world(world, submit):
    """A real request whose people, steps and audit events all carry hostile text."""
    request = submit()
    world.alice.username = f"alice{IMG}"[:150]
    world.alice.save()
    Execution.objects.create(request=request, execution_id="0" * 36, aws_status="Failed", steps=[{
        "name": HOSTILE, "action": IMG, "status": IMG, "failure_message": HOSTILE,
        "started_at": None, "ended_at": None}])
    seed_chain(3, lambda i: hostile_fields(request_id=request.pk))
    return request


class TestEscaping:
    def test_every_auditor_page(self, world, hostile_world, client):
        client.force_login(world.carol)
        event = AuditEvent.objects.filter(actor_name=HOSTILE[:150]).first()
        pages = [
            "/audit/",
            f"/audit/?actor={quote(HOSTILE)}&team={quote(IMG)}&resource={quote(SCRIPT)}",
            f"/audit/events/{event.sequence}/",
            f"/audit/requests/{hostile_world.pk}/",
            f"/audit/resources/{quote('i-' + SCRIPT, safe='')}/",
            f"/audit/resources/{quote(IMG, safe='')}/",
            f"/requests/{hostile_world.pk}/",  # the request page's own timeline
        ]
        for page in pages:
            response = client.get(page)
            assert_escaped(response)
        # The hostile values really were on the pages, escaped (the test would pass on an empty page otherwise).
        timeline = client.get(f"/audit/requests/{hostile_world.pk}/").content.decode()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in timeline
        assert timeline.count("onerror=alert(2)&gt;") >= 5

    def test_browsable_api_escapes_too(self, world, hostile_world):
        api = APIClient()
        api.force_authenticate(world.carol)
        response = api.get("/api/v1/audit/", HTTP_ACCEPT="text/html")
        assert response.status_code == 200
        html = response.content.decode()
        for marker in RAW_MARKERS:
            assert marker not in html

    def test_export_headers_do_not_echo_filters(self, world, hostile_world):
        api = APIClient()
        api.force_authenticate(world.carol)
        response = api.get("/api/v1/audit/export/", {"format": "csv", "actor": HOSTILE[:150]})
        assert response["Content-Disposition"].startswith('attachment; filename="delegate-audit-')
        assert "<" not in response["Content-Disposition"]
        assert response["Content-Type"].startswith("text/csv")
        assert response["X-Content-Type-Options"] == "nosniff"


class TestNoEscapeHatches:
    def test_no_template_turns_escaping_off(self):
        offenders = []
        for path in (ROOT / "automations" / "templates").rglob("*.html"):
            text = path.read_text()
            for pattern in (r"\|\s*safe\b", r"\|\s*safeseq\b", r"{%\s*autoescape\s+off"):
                offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)]
        assert not offenders, offenders

    def test_mark_safe_only_where_html_is_sanitised(self):
        # markdown.py renders runbook descriptions through nh3's allow-list; nothing else may mark text safe.
        allowed = {"automations/runbooks/markdown.py"}
        offenders = []
        for path in (ROOT / "automations").rglob("*.py"):
            relative = str(path.relative_to(ROOT))
            if relative.startswith("sandbox/") or relative in allowed:
                continue
            if re.search(r"\bmark_safe\(|\bSafeString\(|\bSafeData\b", path.read_text()):
                offenders.append(relative)
        assert not offenders, offenders
