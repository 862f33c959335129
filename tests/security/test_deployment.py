"""Issue 13, findings 5 and 6: the shipped deployment is production by default, and /metrics is not public.

There is no container engine here, so the compose file is tested as configuration: its default
services are read with PyYAML, their environment is interpolated the way Compose does it, and
`manage.py check --deploy --fail-level WARNING` runs with exactly that environment.
"""
import io
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

from automations.audit import signing as audit_signing

ROOT = Path(__file__).resolve().parents[2]
_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def default_services() -> dict:
    """What `docker compose up` starts: every service without a profile."""
    return {name: service for name, service in compose()["services"].items() if not service.get("profiles")}


def interpolate(environment: dict, supplied: dict) -> tuple[dict, set]:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}; returns (environment, required variables)."""
    required: set[str] = set()

    def substitute(match: re.Match) -> str:
        name, operator, argument = match.groups()
        if operator in (":?", "?"):
            required.add(name)
            assert name in supplied, f"{name} is required by docker-compose.yml; the test must supply it"
            return supplied[name]
        if operator in (":-", "-"):
            return supplied.get(name, argument)
        return supplied.get(name, "")

    result = {key: _VARIABLE.sub(substitute, str(value).lower() if isinstance(value, bool) else str(value))
              for key, value in environment.items()}
    return result, required


def production_secrets() -> dict:
    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DELEGATE_AUDIT_DIGEST_KEY": audit_signing.generate_ed25519_key()[0],
        "DELEGATE_DB_OWNER_PASSWORD": secrets.token_urlsafe(24),
        "DELEGATE_DB_APP_PASSWORD": secrets.token_urlsafe(24),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "DELEGATE_METRICS_TOKEN": secrets.token_urlsafe(24),
        "DJANGO_ALLOWED_HOSTS": "delegate.example.com",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://delegate.example.com",
        "DELEGATE_BASE_URL": "https://delegate.example.com",
    }


def bare_env(**extra) -> dict:
    """A process environment with nothing from the test run's own settings."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "portal.settings", **extra}


class TestCompose:
    def test_default_services_are_production_shaped(self):
        services = default_services()
        assert {"postgres", "redis", "migrate", "web", "worker", "beat"} <= set(services)
        assert "sandbox" not in services
        for name, service in services.items():
            assert "seed_demo" not in json.dumps(service.get("command", "")), f"{name} seeds demo users"
            for port in service.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
            environment = service.get("environment", {})
            for secret in ("DJANGO_SECRET_KEY", "DELEGATE_AUDIT_DIGEST_KEY", "POSTGRES_PASSWORD"):
                if secret in environment:
                    assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]+\}}", str(environment[secret])), \
                        f"{name}: {secret} must be required, with no fallback ({environment[secret]})"
        web, _ = interpolate(services["web"]["environment"], production_secrets())
        assert web["DELEGATE_SECURE"] == "true" and web["DJANGO_DEBUG"] == "false"
        assert "sandbox" not in web["AWS_ENDPOINT_URL"] and "AKIDSANDBOX" not in web["AWS_ACCESS_KEY_ID"]

    def test_runtime_and_migrations_use_different_database_roles(self):
        services = default_services()
        migrate_url = services["migrate"]["environment"]["DATABASE_URL"]
        assert "delegate_owner" in migrate_url
        for name in ("web", "worker", "beat"):
            environment = services[name]["environment"]
            assert "delegate_app" in environment["DATABASE_URL"], name
            assert "delegate_owner" not in json.dumps(environment), f"{name} can reach the owner role"
        assert services["migrate"]["environment"]["DELEGATE_DB_APP_ROLE"] == "delegate_app"

    def test_the_postgres_init_script_creates_the_roles_db_roles_prints(self):
        out = io.StringIO()
        call_command("db_roles", "--sql", "--owner", "delegate_owner", "--app", "delegate_app",
                     "--database", "delegate", stdout=out)
        volumes = " ".join(compose()["services"]["postgres"]["volumes"])
        script = ROOT / "deploy" / "postgres" / "10-delegate-roles.sql"
        assert "deploy/postgres" in volumes and script.exists()
        assert script.read_text().strip() == out.getvalue().strip()

    def test_demo_data_and_the_sandbox_need_the_demo_profile(self):
        demo = {name: service for name, service in compose()["services"].items()
                if "demo" in service.get("profiles", [])}
        assert "sandbox" in demo
        assert any("seed_demo" in json.dumps(service.get("command", "")) for service in demo.values())
        for name, service in demo.items():
            for port in service.get("ports", []):
                assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"

    def test_check_deploy_passes_with_the_compose_environment(self):
        environment, required = interpolate(default_services()["web"]["environment"], production_secrets())
        assert {"DJANGO_SECRET_KEY", "DELEGATE_AUDIT_DIGEST_KEY"} <= required
        result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                                cwd=ROOT, env=bare_env(**environment), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "System check identified no issues" in result.stdout


class TestStartRefusesWeakSecrets:
    DEFAULTS = ("django-insecure-delegate-demo-key-change-me", "change-me-in-production-please-0123456789abcdef")

    def run_check(self, **environment) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=bare_env(**environment),
                              capture_output=True, text=True, timeout=120)

    @pytest.mark.parametrize("secret_key", [None, *DEFAULTS])
    def test_a_missing_or_known_default_secret_key(self, secret_key):
        environment = {"DJANGO_DEBUG": "false", "DELEGATE_AUDIT_DIGEST_KEY": audit_signing.generate_ed25519_key()[0]}
        if secret_key:
            environment["DJANGO_SECRET_KEY"] = secret_key
        result = self.run_check(**environment)
        assert result.returncode != 0
        message = result.stderr.strip().splitlines()
        assert len(message) == 1, result.stderr
        assert "DJANGO_SECRET_KEY" in message[0] and "secrets.token_urlsafe(50)" in message[0]

    def test_a_missing_digest_key(self):
        result = self.run_check(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
        assert result.returncode != 0
        message = result.stderr.strip().splitlines()
        assert len(message) == 1, result.stderr
        assert "DELEGATE_AUDIT_DIGEST_KEY" in message[0] and "ed25519:" in message[0]

    def test_debug_needs_neither(self):
        result = self.run_check(DJANGO_DEBUG="true")
        assert result.returncode == 0, result.stderr


@pytest.mark.django_db
class TestMetricsAccess:
    @pytest.fixture(autouse=True)
    def production(self, settings):
        settings.DEBUG = False
        settings.DELEGATE_METRICS_TOKEN = ""
        settings.DELEGATE_METRICS_ALLOWED_IPS = []
        settings.TRUSTED_PROXY_COUNT = 0

    def test_closed_without_a_token_or_an_allowed_address(self):
        assert Client().get("/metrics").status_code == 403
        assert Client().get("/healthz").status_code == 200

    def test_bearer_token(self, settings):
        settings.DELEGATE_METRICS_TOKEN = "scrape-secret-0123456789"
        assert Client().get("/metrics").status_code == 401
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret-0123456789")
        assert response.status_code == 200 and b"delegate_metrics_database_up" in response.content

    def test_allowed_addresses(self, settings):
        settings.DELEGATE_METRICS_ALLOWED_IPS = ["10.1.0.0/16", "192.0.2.7"]
        assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
        assert Client(REMOTE_ADDR="192.0.2.7").get("/metrics").status_code == 200
        assert Client(REMOTE_ADDR="192.0.2.8").get("/metrics").status_code == 403
        # Behind a trusted proxy the client is the proxy's X-Forwarded-For entry, not the proxy.
        settings.TRUSTED_PROXY_COUNT = 1
        forwarded = Client(REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="198.51.100.1")
        assert forwarded.get("/metrics").status_code == 403
        assert Client(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.1.9.9").get("/metrics").status_code == 200

    def test_open_with_debug(self, settings):
        settings.DEBUG = True
        assert Client().get("/metrics").status_code == 200
