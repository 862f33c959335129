"""Password sign-in: brute-force lockout per username and IP (django-axes), its audit trail, and the
switch that turns local passwords off (matrix row 24)."""
import pytest
from django.test import Client

from automations.models import AuditEvent

PASSWORD = "delegate-test"  # tests.factories.UserFactory


@pytest.fixture
def limit(settings):
    settings.AXES_FAILURE_LIMIT = 3
    return 3


def _login(client, username, password, ip, agent="pytest-browser/1.0"):
    return client.post("/accounts/login/", {"username": username, "password": password},
                       REMOTE_ADDR=ip, HTTP_USER_AGENT=agent)


def _logged_in(client) -> bool:
    return client.get("/runbooks/").status_code == 200


class TestLockout:
    def test_the_pair_is_locked_after_the_limit_even_with_the_right_password(self, world, limit):
        attacker = Client()
        statuses = [_login(attacker, "bob", "wrong-guess", "203.0.113.7").status_code for _ in range(limit)]
        assert statuses == [200] * (limit - 1) + [429]  # the form again with an error, then locked
        locked = _login(attacker, "bob", PASSWORD, "203.0.113.7")
        assert locked.status_code == 429
        assert not _logged_in(attacker)

    def test_the_same_user_from_another_ip_still_logs_in(self, world, limit):
        for _ in range(limit + 1):
            _login(Client(), "bob", "wrong-guess", "203.0.113.7")
        bob = Client()
        assert _login(bob, "bob", PASSWORD, "198.51.100.20").status_code == 302
        assert _logged_in(bob)

    def test_another_user_from_the_same_ip_still_logs_in(self, world, limit):
        for _ in range(limit + 1):
            _login(Client(), "bob", "wrong-guess", "203.0.113.7")
        alice = Client()
        assert _login(alice, "alice", PASSWORD, "203.0.113.7").status_code == 302

    def test_failures_lockouts_and_logins_are_audited_with_ip_and_user_agent(self, world, limit):
        for _ in range(limit + 1):
            _login(Client(), "bob", "wrong-guess", "203.0.113.7", agent="evil-bot/2")
        _login(Client(), "bob", PASSWORD, "198.51.100.20", agent="Firefox/140")
        failures = AuditEvent.objects.filter(action="login.fail").order_by("sequence")
        assert failures.count() == limit + 1
        assert {(e.client_ip, e.user_agent, e.details["username"]) for e in failures} == \
            {("203.0.113.7", "evil-bot/2", "bob")}
        locked = AuditEvent.objects.filter(action="login.locked_out")
        assert locked.exists()
        assert {(e.client_ip, e.user_agent, e.details["username"]) for e in locked} == \
            {("203.0.113.7", "evil-bot/2", "bob")}
        ok = AuditEvent.objects.get(action="login.ok")
        assert (ok.actor, ok.client_ip, ok.user_agent, ok.details) == (world.bob, "198.51.100.20", "Firefox/140",
                                                                       {"method": "password"})
        assert "wrong-guess" not in str(list(AuditEvent.objects.values_list("details", flat=True)))

    def test_behind_a_trusted_proxy_the_client_address_is_the_key(self, world, limit, settings):
        # One proxy appends the client's address; everything left of it is the client's to forge.
        settings.TRUSTED_PROXY_COUNT = 1
        for spoof in ("1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"):
            Client().post("/accounts/login/", {"username": "bob", "password": "wrong-guess"},
                          REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"{spoof}, 203.0.113.7")
        # Rotating the forged part does not escape the lockout of the real address...
        locked = Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD},
                               REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="5.5.5.5, 203.0.113.7")
        assert locked.status_code == 429
        # ...and another client behind the same proxy is not locked with it.
        other = Client().post("/accounts/login/", {"username": "bob", "password": PASSWORD},
                              REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.20")
        assert other.status_code == 302
        assert set(AuditEvent.objects.filter(action="login.fail").values_list("client_ip", flat=True)) == \
            {"203.0.113.7"}


class TestLocalLoginSwitch:
    def test_on_by_default_the_form_is_shown(self, world):
        page = Client().get("/accounts/login/")
        assert b'name="password"' in page.content

    def test_off_hides_the_form_and_refuses_password_posts(self, world, settings):
        settings.DELEGATE_LOCAL_LOGIN = False
        client = Client()
        page = client.get("/accounts/login/")
        assert page.status_code == 200 and b'name="password"' not in page.content
        refused = _login(client, "bob", PASSWORD, "198.51.100.20")
        assert refused.status_code == 403
        assert b"Password sign-in is switched off" in refused.content
        assert not _logged_in(client)
        event = AuditEvent.objects.get(action="login.refused")
        assert event.details == {"username": "bob", "reason": "local_login_disabled"}
        assert event.client_ip == "198.51.100.20"

    def test_off_refuses_passwords_on_every_path_including_the_admin(self, world, settings):
        from django.contrib.auth import authenticate
        from django.test import RequestFactory

        world.bob.is_staff = world.bob.is_superuser = True
        world.bob.save()
        settings.DELEGATE_LOCAL_LOGIN = False
        client = Client()
        # The admin's own login URL leads to the one sign-in page, keeping where to go next.
        redirect = client.get("/admin/login/?next=/admin/")
        assert redirect.status_code == 302 and redirect["Location"] == "/accounts/login/?next=/admin/"
        admin_post = client.post("/admin/login/?next=/admin/", {"username": "bob", "password": PASSWORD})
        assert admin_post.status_code in (302, 405) and not _logged_in(client)
        request = RequestFactory().post("/anywhere/", REMOTE_ADDR="198.51.100.20")
        assert authenticate(request, username="bob", password=PASSWORD) is None
        assert client.get("/admin/").status_code == 302

    def test_off_keeps_existing_sessions_and_api_tokens_working(self, world, settings):
        from rest_framework.authtoken.models import Token
        from rest_framework.test import APIClient

        settings.DELEGATE_LOCAL_LOGIN = False
        session = Client()
        session.force_login(world.alice)  # e.g. a single sign-on session
        assert _logged_in(session)
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world.alice).key}")
        assert api.get("/api/v1/runbooks/").status_code == 200
