"""Operations endpoints and signals: /healthz, /metrics (and its numbers), request ids in logs and
task messages. /readyz against a real broker, and metrics gathered from worker processes, are in
tests/integration/test_operations.py."""
from types import SimpleNamespace

import pytest
import structlog
from django.test import Client

from automations import services, tasks
from automations.ops import metrics


def sample(metric, **labels) -> float:
    name = metric._name
    for family in metric.collect():
        for s in family.samples:
            if s.name in (f"{name}_total", f"{name}_count", name) and all(
                    s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


class TestHealth:
    def test_healthz_touches_nothing(self, db, client, django_assert_num_queries):
        with django_assert_num_queries(0):
            response = client.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert response["Cache-Control"] == "no-store"


class TestMetrics:
    def test_exposes_the_dispatch_numbers(self, world, submit, settings):
        settings.DELEGATE_METRICS_ALLOWED_IPS = ["127.0.0.1"]  # the test client's address
        services.request_approve(request=submit(), actor=world.bob)
        text = Client().get("/metrics").content.decode()
        for name in ("delegate_dispatch_latency_seconds_bucket", "delegate_aws_calls_total",
                     "delegate_aws_throttles_total", "delegate_broker_publish_total"):
            assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text
        assert 'delegate_outbox_rows{state="pending"} 1.0' in text
        assert "delegate_outbox_oldest_age_seconds" in text
        assert 'delegate_requests_active{status="approved"} 1.0' in text
        assert "delegate_metrics_database_up 1.0" in text

    def test_bearer_token_when_configured(self, db, settings):
        settings.DELEGATE_METRICS_TOKEN = "scrape-secret"
        assert Client().get("/metrics").status_code == 401
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200

    def test_aws_calls_counted_per_attempt_by_outcome(self, world, submit, sb):
        labels = {"service": "ssm", "operation": "StartAutomationExecution"}
        throttled, ok = sample(metrics.AWS_CALLS, outcome="throttled", **labels), sample(metrics.AWS_CALLS, outcome="ok", **labels)
        throttles = sample(metrics.AWS_THROTTLES, **labels)
        request = services.request_approve(request=submit(), actor=world.bob)
        sb.faults.throttle_next("StartAutomationExecution", 1)
        assert services.request_dispatch(request_id=request.pk) == "started"
        assert sample(metrics.AWS_CALLS, outcome="throttled", **labels) == throttled + 1
        assert sample(metrics.AWS_CALLS, outcome="ok", **labels) == ok + 1
        assert sample(metrics.AWS_THROTTLES, **labels) == throttles + 1
        assert sample(metrics.DISPATCH_OUTCOMES, outcome="started") >= 1

    def test_outcome_classification(self):
        assert metrics.outcome_of({"status_code": 200}, {}, None) == "ok"
        assert metrics.outcome_of({"status_code": 400}, {"Error": {"Code": "ThrottlingException"}}, None) == "throttled"
        assert metrics.outcome_of({"status_code": 400}, {"Error": {"Code": "AutomationExecutionLimitExceededException"}},
                                  None) == "limit_exceeded"
        assert metrics.outcome_of({"status_code": 400}, {"Error": {"Code": "ValidationException"}}, None) == "client_error"
        assert metrics.outcome_of({"status_code": 503}, {"Error": {"Code": "ServiceUnavailable"}}, None) == "server_error"
        assert metrics.outcome_of(None, None, ConnectionError()) == "network_error"

    def test_a_scrape_answers_even_when_the_database_does_not(self, db, monkeypatch, settings):
        from automations.models import DispatchOutbox

        settings.DELEGATE_METRICS_ALLOWED_IPS = ["127.0.0.1"]
        def unavailable(*args, **kwargs):
            raise RuntimeError("database unavailable")
        monkeypatch.setattr(DispatchOutbox.objects, "filter", unavailable)
        response = Client().get("/metrics")
        assert response.status_code == 200
        text = response.content.decode()
        assert "delegate_metrics_database_up 0.0" in text
        assert "delegate_dispatch_latency_seconds_count" in text  # the process's own numbers still come


class TestRequestIds:
    def test_each_response_carries_its_own_id(self, db):
        first, second = Client().get("/healthz"), Client().get("/healthz")
        assert len(first["X-Request-Id"]) == 32 and first["X-Request-Id"] != second["X-Request-Id"]

    def test_a_trusted_proxy_id_is_kept_and_a_hostile_one_replaced(self, db, settings):
        settings.TRUSTED_PROXY_COUNT = 1
        assert Client().get("/healthz", HTTP_X_REQUEST_ID="lb-0123456789").headers["X-Request-Id"] == "lb-0123456789"
        hostile = Client().get("/healthz", HTTP_X_REQUEST_ID='x" onload="alert(1)').headers["X-Request-Id"]
        assert hostile != 'x" onload="alert(1)' and len(hostile) == 32
        settings.TRUSTED_PROXY_COUNT = 0
        assert Client().get("/healthz", HTTP_X_REQUEST_ID="lb-0123456789").headers["X-Request-Id"] != "lb-0123456789"

    def test_task_messages_carry_the_request_id_into_the_worker(self):
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id="web-request-1")
        headers = {}
        tasks._carry_request_id(headers=headers)
        assert headers == {tasks.REQUEST_ID_HEADER: "web-request-1"}
        # The worker side: the header becomes the task's log context.
        structlog.contextvars.clear_contextvars()
        task = SimpleNamespace(name="automations.dispatch_request",
                               request=SimpleNamespace(**{tasks.REQUEST_ID_HEADER: "web-request-1"}))
        tasks._bind_request_id(task=task, task_id="t-1")
        assert structlog.contextvars.get_contextvars()["request_id"] == "web-request-1"
        tasks._unbind_request_id()
        tasks._unbind_request_id()
        # A forged header is not trusted into the logs.
        tasks._bind_request_id(task=SimpleNamespace(name="x", request=SimpleNamespace(
            **{tasks.REQUEST_ID_HEADER: '"}\n{"level": "critical"'})), task_id="t-3")
        assert len(structlog.contextvars.get_contextvars()["request_id"]) == 32
        # A task nobody's request caused (beat) gets a fresh id.
        tasks._bind_request_id(task=SimpleNamespace(name="beat", request=SimpleNamespace(headers=None)), task_id="t-2")
        assert len(structlog.contextvars.get_contextvars()["request_id"]) == 32
        structlog.contextvars.clear_contextvars()


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_operations_endpoints_need_no_login(db, path, settings):
    settings.DELEGATE_METRICS_ALLOWED_IPS = ["127.0.0.1"]  # /metrics: an allowed scraper (tests/test_deployment.py)
    assert Client().get(path).status_code == 200


@pytest.mark.postgres(reason="PostgreSQL's JIT setting")
@pytest.mark.django_db
def test_the_portal_connects_to_postgresql_without_jit():
    """JIT compiled the approval queue's query for 56 ms to save a few (docs/benchmarks.md)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"
