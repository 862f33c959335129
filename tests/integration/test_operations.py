"""/readyz against a real Redis (up, down, hung), and what operators see of worker processes:
metrics gathered across processes (PROMETHEUS_MULTIPROC_DIR) and one request id from the web
request that approved to the worker's log lines."""
import json
import os
import signal
import time

import pytest
from django.test import Client
from django.urls import reverse

from automations.models import AutomationRequest
from tests.processes import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_readyz_follows_the_broker(broker, redis_server):
    web = Client()
    response = web.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["checks"]["database"]["status"] == "ok" and body["checks"]["broker"]["status"] == "ok"

    redis_server.proc.send_signal(signal.SIGSTOP)  # hung: accepts connections, never answers
    try:
        started = time.monotonic()
        response = web.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["broker"]["status"].startswith("error")
        assert time.monotonic() - started < 6
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)

    redis_server.stop()
    started = time.monotonic()
    response = web.get("/readyz")
    assert response.status_code == 503 and time.monotonic() - started < 3
    assert response.json()["checks"]["database"]["status"] == "ok"

    redis_server.start()
    wait_until(lambda: web.get("/readyz").status_code == 200, timeout=10, what="ready again")


def test_worker_metrics_and_the_request_id_reach_the_operator(world, submit, worker_factory, broker, sb, tmp_path,
                                                              monkeypatch, settings):
    settings.DELEGATE_METRICS_ALLOWED_IPS = ["127.0.0.1"]  # the scraper's address
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    worker = worker_factory.start("a", PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    request = submit()
    web = Client()
    web.force_login(world.bob)
    response = web.post(reverse("automations:request_approve", args=[request.pk]), {"comment": "ok"})
    request_id = response["X-Request-Id"]
    wait_until(lambda: AutomationRequest.objects.get(pk=request.pk).status == "running", timeout=20, what="running")

    # The worker's log line for the start carries the id of the web request that approved.
    def started_line():
        for line in worker.output().splitlines():
            if '"dispatch.started"' in line:
                return json.loads(line)
    line = wait_until(started_line, timeout=10, what="the worker's dispatch.started log line")
    assert line["request_id"] == request_id
    assert line["automation_request"] == request.pk

    # /metrics adds up every process's numbers from the shared directory.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    text = web.get("/metrics").content.decode()
    assert "delegate_dispatch_latency_seconds_count 1.0" in text
    assert ('delegate_aws_calls_total{operation="StartAutomationExecution",outcome="ok",service="ssm"} 1.0'
            in text)
    assert 'delegate_dispatch_outcomes_total{outcome="started"} 1.0' in text
    assert os.listdir(metrics_dir)
