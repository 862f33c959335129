"""Single sign-on against a real OpenID Connect provider started by the test.

The provider is django-oauth-toolkit's (tests/identity/oidc_provider), run by gunicorn on a free loopback
port with an RSA key made here. The browser's side of the authorization-code flow is a real HTTP
client (requests) following the provider's redirects and submitting its login form; Delegate's side
is the Django test client, whose backend talks to the provider's token, JWKS and userinfo
endpoints over real HTTP.
"""
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from automations.models import AuditEvent, Membership, SsoGroupRule, SsoIdentity
from tests.conftest import require
from tests.processes import free_port

IDP_DIR = Path(__file__).resolve().parent / "oidc_provider"
CALLBACK = "http://testserver/oidc/callback/"
USERS = {"grace": "grace-pw-1", "ann": "ann-pw-1", "bob": "bob-idp-pw-1", "otto": "otto-pw-1"}
AGENT = "Mozilla/5.0 (sso-test)"


def _rsa_private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    try:
        import oauth2_provider  # noqa: F401
    except ImportError:
        require(False, "django-oauth-toolkit (the test OpenID provider; pip install -e .[test])")
    tmp = tmp_path_factory.mktemp("idp")
    port = free_port()
    claims_file = tmp / "claims.json"
    claims_file.write_text("{}")
    client_id, client_secret = "delegate-" + secrets.token_hex(4), secrets.token_urlsafe(32)
    env = {
        "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(IDP_DIR), "DJANGO_SETTINGS_MODULE": "idp.settings",
        "IDP_DB": str(tmp / "idp.sqlite3"), "IDP_SECRET_KEY": secrets.token_urlsafe(50),
        "IDP_RSA_PRIVATE_KEY": _rsa_private_key(), "IDP_CLAIMS_FILE": str(claims_file),
        "IDP_USERS": json.dumps(USERS), "IDP_CLIENT_ID": client_id, "IDP_CLIENT_SECRET": client_secret,
        "IDP_REDIRECT_URI": CALLBACK, "NO_PROXY": "127.0.0.1,localhost",
    }
    for step in (["-m", "django", "migrate", "--noinput", "-v", "0"], ["-m", "idp.seed"]):
        subprocess.run([sys.executable, *step], cwd=IDP_DIR, env=env, check=True, capture_output=True, timeout=120)
    log = open(tmp / "gunicorn.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "idp.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1",
         "--threads", "4", "--log-level", "warning"],
        cwd=IDP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    discovery = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            discovery = requests.get(f"{base}/o/.well-known/openid-configuration", timeout=2).json()
            break
        except (requests.RequestException, ValueError):
            time.sleep(0.2)
    if discovery is None:
        process.kill()
        pytest.fail("the test OpenID provider did not start:\n" + (tmp / "gunicorn.log").read_text()[-3000:])

    def set_claims(**claims):
        claims_file.write_text(json.dumps(claims))

    yield SimpleNamespace(base=base, discovery=discovery, client_id=client_id, client_secret=client_secret,
                          set_claims=set_claims)
    os.killpg(process.pid, signal.SIGTERM)  # only the process group this fixture started
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


@pytest.fixture
def sso(settings, idp, world, monkeypatch):
    """Delegate configured for the provider, the way the environment would (see oidc_discover)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    d = idp.discovery
    settings.DELEGATE_OIDC_ENABLED = True
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = idp.client_id, idp.client_secret
    settings.OIDC_OP_ISSUER = d["issuer"]
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = d["authorization_endpoint"]
    settings.OIDC_OP_TOKEN_ENDPOINT = d["token_endpoint"]
    settings.OIDC_OP_USER_ENDPOINT = d["userinfo_endpoint"]
    settings.OIDC_OP_JWKS_ENDPOINT = d["jwks_uri"]
    settings.OIDC_RP_SIGN_ALGO = "RS256"
    # The rules an admin would enter: provider groups → Delegate roles.
    SsoGroupRule.objects.create(claim_value="platform-leads", role="lead", team=world.platform)
    SsoGroupRule.objects.create(claim_value="platform-devs", role="member", team=world.platform)
    SsoGroupRule.objects.create(claim_value="data-devs", role="member", team=world.data)
    SsoGroupRule.objects.create(claim_value="audit", role="auditor")
    SsoGroupRule.objects.create(claim_value="delegate-admins", role="admin")
    return idp


def sso_login(client: Client, idp, username: str, *, next_url: str = "", tamper_state: bool = False):
    """Drive the authorization-code flow; return Delegate's answer to the provider's redirect."""
    start = client.get("/oidc/authenticate/" + (f"?next={next_url}" if next_url else ""), HTTP_USER_AGENT=AGENT)
    assert start.status_code == 302, start.content
    authorize = start["Location"]
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(idp.discovery["authorization_endpoint"])
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    browser = requests.Session()
    browser.trust_env = False  # loopback only, never a proxy
    url, hops = authorize, 0
    while not url.startswith(CALLBACK):
        hops += 1
        assert hops < 10, url
        response = browser.get(url, allow_redirects=False, timeout=10)
        if response.status_code == 200 and 'name="password"' in response.text:
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.text).group(1)
            response = browser.post(url, allow_redirects=False, timeout=10, headers={"Referer": url},
                                    data={"csrfmiddlewaretoken": token, "username": username,
                                          "password": USERS[username], "next": parse_qs(urlsplit(url).query)["next"][0]})
        assert response.status_code == 302, (url, response.status_code, response.text[:500])
        url = urljoin(url, response.headers["Location"])
    callback = url[len("http://testserver"):]
    if tamper_state:
        callback = re.sub(r"state=[^&]+", "state=forged" + secrets.token_hex(8), callback)
    return client.get(callback, HTTP_USER_AGENT=AGENT, REMOTE_ADDR="192.0.2.44")


def _user(username):
    return get_user_model().objects.get(username=username)


def _memberships(user) -> dict:
    return dict(Membership.objects.filter(user=user).values_list("team__name", "role"))


def test_first_login_creates_the_user_with_teams_and_roles_from_the_rules(sso, world):
    sso.set_claims(grace={"groups": ["platform-leads", "data-devs", "audit", "unrelated"],
                          "given_name": "Grace", "family_name": "Hopper"})
    client = Client()
    response = sso_login(client, sso, "grace", next_url="/approvals/")
    assert response.status_code == 302 and response["Location"] == "/approvals/"
    grace = _user("grace")
    assert (grace.first_name, grace.last_name, grace.email) == ("Grace", "Hopper", "grace@idp.example")
    assert not grace.has_usable_password()
    assert _memberships(grace) == {"platform": "lead", "data": "member"}
    assert grace.groups.filter(name="auditors").exists() and not grace.is_staff
    assert SsoIdentity.objects.get(user=grace).issuer == sso.discovery["issuer"]
    assert client.get("/approvals/").status_code == 200  # signed in, as a lead
    created = AuditEvent.objects.get(action="sso.user_created")
    assert created.actor == grace and created.details["issuer"] == sso.discovery["issuer"]
    changed = AuditEvent.objects.get(action="sso.access_changed")
    assert changed.details["added"] == ["data:member", "platform:lead"]
    assert changed.details["auditor"] == {"before": False, "after": True}
    ok = AuditEvent.objects.get(action="login.ok")
    assert (ok.actor, ok.details, ok.client_ip, ok.user_agent) == (grace, {"method": "sso"}, "192.0.2.44", AGENT)


def test_every_login_resyncs_access_and_the_binding_survives_a_renamed_claim(sso, world):
    sso.set_claims(grace={"groups": ["platform-leads", "audit"]})
    sso_login(Client(), sso, "grace")
    grace = _user("grace")
    assert _memberships(grace) == {"platform": "lead"}
    # The provider now says: data developer and Delegate admin; no longer platform lead or auditor.
    # It also renamed her preferred_username: the (iss, sub) binding still finds the same account.
    sso.set_claims(grace={"groups": ["data-devs", "delegate-admins"], "preferred_username": "grace.h"})
    client = Client()
    assert sso_login(client, sso, "grace").status_code == 302
    grace.refresh_from_db()
    assert get_user_model().objects.filter(username__startswith="grace").count() == 1
    assert _memberships(grace) == {"data": "member"}
    assert not grace.groups.filter(name="auditors").exists()
    assert grace.is_staff and grace.is_superuser
    last = AuditEvent.objects.filter(action="sso.access_changed").order_by("-sequence").first()
    assert last.details["removed"] == ["platform:lead"] and last.details["added"] == ["data:member"]
    assert last.details["admin"] == {"before": False, "after": True}
    assert client.get("/admin/").status_code == 200


def test_teams_without_rules_are_left_to_the_admin(sso, world):
    from tests import factories as f

    ops = f.TeamFactory(name="ops")
    sso.set_claims(otto={"groups": ["platform-devs"]})
    sso_login(Client(), sso, "otto")
    otto = _user("otto")
    Membership.objects.create(user=otto, team=ops, role="lead")  # given by hand in the admin
    sso_login(Client(), sso, "otto")
    assert _memberships(otto) == {"platform": "member", "ops": "lead"}


def test_with_local_passwords_off_an_admin_signs_in_with_sso_and_the_admin_works(sso, world, settings):
    settings.DELEGATE_LOCAL_LOGIN = False
    client = Client()
    page = client.get("/accounts/login/?next=/admin/")
    assert b"Sign in with single sign-on" in page.content and b'name="password"' not in page.content
    assert b'href="/oidc/authenticate/?next=/admin/"' in page.content
    refused = client.post("/accounts/login/", {"username": "ann", "password": USERS["ann"]})
    assert refused.status_code == 403
    sso.set_claims(ann={"groups": ["delegate-admins"]})
    response = sso_login(client, sso, "ann", next_url="/admin/")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/automations/ssogrouprule/").status_code == 200


def test_rules_are_edited_in_the_admin_and_audited(sso, world):
    admin_user = get_user_model().objects.create_superuser("root", "root@example.com", "root-pw-123456")
    client = Client()
    client.force_login(admin_user)
    response = client.post("/admin/automations/ssogrouprule/add/",
                           {"claim_value": "data-leads", "role": "lead", "team": world.data.pk})
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="config.created", details__model="automations.SsoGroupRule")
    assert event.actor == admin_user and event.details["after"]["claim_value"] == "data-leads"
    # A team role needs a team, a global role none.
    bad = client.post("/admin/automations/ssogrouprule/add/", {"claim_value": "x", "role": "auditor",
                                                               "team": world.data.pk})
    assert bad.status_code == 200 and b"leave the team empty" in bad.content


def test_an_existing_local_account_is_not_taken_over_unless_allowed(sso, world, settings):
    sso.set_claims(bob={"groups": ["delegate-admins"]})
    client = Client()
    response = sso_login(client, sso, "bob")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?sso=failed"
    world.bob.refresh_from_db()
    assert not world.bob.is_superuser and not SsoIdentity.objects.exists()
    assert client.get("/runbooks/").status_code == 302  # not signed in
    refused = AuditEvent.objects.get(action="login.sso_failed")
    assert refused.details == {"reason": "username_taken", "username": "bob"}
    assert refused.client_ip == "192.0.2.44" and refused.user_agent == AGENT
    assert b"Single sign-on did not complete" in client.get(response["Location"]).content

    settings.DELEGATE_OIDC_LINK_EXISTING = True
    assert sso_login(client, sso, "bob")["Location"] == "/"
    world.bob.refresh_from_db()
    assert world.bob.is_superuser and SsoIdentity.objects.get().user == world.bob
    assert AuditEvent.objects.filter(action="sso.user_linked", actor=world.bob).exists()


def test_a_forged_state_is_refused_and_audited(sso, world):
    sso.set_claims(grace={"groups": ["platform-leads"]})
    client = Client()
    response = sso_login(client, sso, "grace", tamper_state=True)
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?sso=failed"
    assert not get_user_model().objects.filter(username="grace").exists()
    assert AuditEvent.objects.get(action="login.sso_failed").details == {"reason": "state_mismatch"}


def test_a_token_from_another_issuer_is_refused(sso, world, settings):
    settings.OIDC_OP_ISSUER = "https://login.evil.example"
    sso.set_claims(grace={"groups": ["platform-leads"]})
    response = sso_login(Client(), sso, "grace")
    assert response["Location"] == "/accounts/login/?sso=failed"
    assert AuditEvent.objects.get(action="login.sso_failed").details == {"reason": "wrong_issuer"}
    assert not get_user_model().objects.filter(username="grace").exists()


def test_a_disabled_account_stays_out(sso, world):
    sso.set_claims(grace={"groups": ["platform-leads"]})
    sso_login(Client(), sso, "grace")
    get_user_model().objects.filter(username="grace").update(is_active=False)
    client = Client()
    assert sso_login(client, sso, "grace")["Location"] == "/accounts/login/?sso=failed"
    assert AuditEvent.objects.filter(action="login.sso_failed", details__reason="inactive").exists()


def test_nothing_from_the_providers_tokens_is_kept_or_audited(sso, world):
    sso.set_claims(grace={"groups": ["platform-leads"]})
    client = Client()
    sso_login(client, sso, "grace")
    from django.contrib.sessions.models import Session

    sessions = [s.get_decoded() for s in Session.objects.all()]
    assert sessions and not {"oidc_access_token", "oidc_id_token"} & {key for s in sessions for key in s}
    assert "eyJ" not in json.dumps(sessions)  # no JWT at all
    rows = json.dumps(list(AuditEvent.objects.values()), default=str)
    assert "eyJ" not in rows and sso.client_secret not in rows  # no JWT, no client secret


def test_audience_is_checked(settings, db):
    import jwt
    from cryptography.hazmat.primitives import serialization

    from automations.identity.sso import OidcBackend, SsoRefused

    private = _rsa_private_key()
    public = serialization.load_pem_private_key(private.encode(), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    settings.DELEGATE_OIDC_ENABLED = True
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET = "delegate", "unused"
    settings.OIDC_OP_ISSUER = "https://idp.example"
    settings.OIDC_OP_TOKEN_ENDPOINT = settings.OIDC_OP_USER_ENDPOINT = "https://idp.example/unused"
    settings.OIDC_RP_IDP_SIGN_KEY = public
    backend = OidcBackend()
    now = int(time.time())
    claims = {"iss": "https://idp.example", "sub": "1", "nonce": "n", "iat": now, "exp": now + 60}
    good = jwt.encode({**claims, "aud": "delegate"}, private, algorithm="RS256")
    assert backend.verify_token(good, nonce="n")["sub"] == "1"
    for payload, reason in (({**claims, "aud": "someone-else"}, "wrong_audience"),
                            ({**claims, "aud": ["someone-else", "delegate"]}, "wrong_audience"),
                            ({**claims, "aud": "delegate", "exp": now - 10}, "token_invalid")):
        with pytest.raises(SsoRefused) as refused:
            backend.verify_token(jwt.encode(payload, private, algorithm="RS256"), nonce="n")
        assert refused.value.reason == reason


def test_without_configuration_there_is_no_sso(client, db, settings):
    settings.DELEGATE_OIDC_ENABLED = False
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404
    assert b"single sign-on" not in client.get("/accounts/login/").content


def test_oidc_discover_prints_the_environment(idp):
    out = io.StringIO()
    call_command("oidc_discover", idp.discovery["issuer"], stdout=out, stderr=io.StringIO())
    lines = dict(line.split("=", 1) for line in out.getvalue().splitlines() if "=" in line and line[0] != "#")
    assert lines == {
        "OIDC_OP_ISSUER": idp.discovery["issuer"],
        "OIDC_OP_AUTHORIZATION_ENDPOINT": idp.discovery["authorization_endpoint"],
        "OIDC_OP_TOKEN_ENDPOINT": idp.discovery["token_endpoint"],
        "OIDC_OP_USER_ENDPOINT": idp.discovery["userinfo_endpoint"],
        "OIDC_OP_JWKS_ENDPOINT": idp.discovery["jwks_uri"],
        "OIDC_RP_SIGN_ALGO": "RS256",
    }


def test_half_configured_sso_fails_the_system_check(settings):
    from django.core import checks

    settings.DELEGATE_OIDC_ENABLED, settings.OIDC_RP_CLIENT_ID = True, "delegate"
    settings.OIDC_RP_CLIENT_SECRET, settings.OIDC_OP_ISSUER = "s", ""
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = settings.OIDC_OP_TOKEN_ENDPOINT = "https://idp.example/x"
    settings.OIDC_OP_USER_ENDPOINT = settings.OIDC_OP_JWKS_ENDPOINT = "https://idp.example/x"
    settings.OIDC_RP_SIGN_ALGO = "HS256"
    ids = {message.id for message in checks.run_checks(tags=[checks.Tags.security])}
    assert {"delegate.E101", "delegate.E102"} <= ids
    settings.DELEGATE_OIDC_ENABLED = False
    assert not {"delegate.E101", "delegate.E102"} & {m.id for m in checks.run_checks(tags=[checks.Tags.security])}


def test_a_callback_in_a_browser_that_never_started_the_flow_is_refused(sso, world):
    response = Client().get("/oidc/callback/?code=stolen-code&state=someone-elses-state", REMOTE_ADDR="192.0.2.9")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/?sso=failed"
    event = AuditEvent.objects.get(action="login.sso_failed")
    assert event.details == {"reason": "state_mismatch"} and event.client_ip == "192.0.2.9"
    assert not SsoIdentity.objects.exists()
