"""A live Delegate stack for the browser journeys (docs/browser-tests.md).

- the in-process sandbox (session fixture `sandbox`), reached over HTTP by the worker;
- the web: pytest-django's `live_server` (a threaded WSGI server in this process, on the
  PostgreSQL test database; transactional tests, so the worker sees committed rows);
- a redis-server of our own on a free loopback port and one real `celery worker -B` process
  (worker + embedded beat: dispatch, status sync every second, outbox sweep) on the test database;
  package-scoped: they stop after the last browser test, so no later test shares the database,
  the sandbox or Celery's broker setting with them;
- the distribution's Chromium, driven by Playwright; never a browser download.

Everything started here is stopped here, by its own pid / process group.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import BROWSER, require, require_postgres
from tests.processes import RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[2]


CHROMIUM = os.environ.get("DELEGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Every run saves its screenshots under test-artifacts/ (CI keeps them); DELEGATE_UPDATE_SCREENSHOTS=1
# writes them to docs/screenshots/ instead, which is how the README's pictures are refreshed.
SCREENSHOTS = ROOT / ("docs/screenshots" if os.environ.get("DELEGATE_UPDATE_SCREENSHOTS") == "1"
                      else "test-artifacts/screenshots")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}
PASSWORD = "delegate-demo"  # seed_demo's password


#
# Browser
#

@pytest.fixture(scope="package")
def browser():
    require(os.path.exists(CHROMIUM), f"Chromium at {CHROMIUM} (apt-get install chromium)", group=BROWSER)
    # Playwright's sync API keeps an asyncio loop on this thread; Django's guard would then refuse
    # every ORM call of the test itself (seeding, assertions). Nothing here runs async code, and
    # the switch is undone when the browser package is done.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the test extra installs it
        require(False, "the playwright package (pip install -e .[test])", group=BROWSER)
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Pages:
    """Opens pages for a user and collects what the browser complained about (CSP, JS errors)."""

    def __init__(self, browser, base_url: str):
        self.browser, self.base_url = browser, base_url
        self.contexts = []
        self.problems: list[str] = []

    def open(self, viewport=DESKTOP, **options):
        context = self.browser.new_context(viewport=viewport, base_url=self.base_url, accept_downloads=True,
                                           **options)
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"{page.url}: {e}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status} {r.url}"))
        return page

    def login(self, page, username: str, password: str = PASSWORD, next_path: str = "/"):
        """Sign in through the login form, as a person would (keyboard: Enter submits)."""
        page.goto(f"/accounts/login/?next={next_path}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_label("Password").press("Enter")
        page.wait_for_url(lambda url: "/accounts/login/" not in url)
        return page

    def as_user(self, username: str, viewport=DESKTOP, next_path: str = "/"):
        return self.login(self.open(viewport), username, next_path=next_path)

    def close(self):
        for context in self.contexts:
            with contextlib.suppress(Exception):
                context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.browser_failed = report.failed


@pytest.fixture
def pages(request, browser, live_server, tmp_path_factory):
    opened = Pages(browser, live_server.url)
    yield opened
    if getattr(request.node, "browser_failed", False):
        # What each open page showed when the test failed, for the person reading the log.
        folder = Path(os.environ.get("DELEGATE_BROWSER_FAILURES") or tmp_path_factory.mktemp("failures"))
        for n, context in enumerate(opened.contexts):
            for m, page in enumerate(context.pages):
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(folder / f"{request.node.name}-{n}-{m}.png"), full_page=True)
        print(f"browser screenshots of the failure: {folder}")
    opened.close()
    # A CSP violation or a script error is a bug even when the journey got through.
    assert not opened.problems, "browser errors:\n" + "\n".join(opened.problems)


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """<name>.png in SCREENSHOTS (test-artifacts/, or docs/screenshots/ when refreshing the README's)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # No style injection: Playwright's animations="disabled" and caret="hide" add a <style> to the page,
    # which the site's CSP (style-src 'self') refuses and reports, i.e. a harness-made browser error.
    page.screenshot(path=str(path), full_page=full_page, animations="allow", caret="initial")
    return path


#
# The stack behind the browser
#

@pytest.fixture(scope="package")
def browser_redis(tmp_path_factory):
    require(shutil.which("redis-server") is not None, "redis-server on PATH", group="redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def web_broker(browser_redis):
    """The web (this process) publishes dispatches to our Redis, as production's would."""
    from django.conf import settings

    from portal.celery import app

    def reset_pools():
        if app._pool is not None:
            with contextlib.suppress(Exception):
                app._pool.force_close_all()
        app._pool = None
        with contextlib.suppress(AttributeError, KeyError):
            app.__dict__["amqp"]._producer_pool = None

    previous = (app.conf.broker_url, app.conf.broker_transport_options)
    app.conf.broker_url = browser_redis.url
    app.conf.broker_transport_options = dict(settings.REDIS_BROKER_TRANSPORT_OPTIONS)
    reset_pools()
    yield app
    app.conf.broker_url, app.conf.broker_transport_options = previous
    reset_pools()


@pytest.fixture(scope="package")
def celery_worker_and_beat(django_db_setup, django_db_blocker, sandbox, browser_redis, web_broker,
                           tmp_path_factory):
    """One `celery worker -B` on the test database: dispatches, and syncs statuses every second."""
    from django.db import connection

    with django_db_blocker.unblock():
        require_postgres("the Celery worker shares the test database")
        db = connection.settings_dict
    work = tmp_path_factory.mktemp("celery")
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}",
        "REDIS_URL": browser_redis.url, "CELERY_BROKER_URL": browser_redis.url,
        "AWS_ENDPOINT_URL": sandbox.url, "AWS_DEFAULT_REGION": "eu-west-1",
        "DELEGATE_VAR_DIR": str(work),
        "DELEGATE_STATUS_POLL_SECONDS": "1", "DELEGATE_OUTBOX_SWEEP_SECONDS": "2",
        "DELEGATE_RATE_START": "50", "DELEGATE_RATE_STOP": "50", "DELEGATE_RATE_READ": "50",
        "DELEGATE_DISPATCH_RETRY_SECONDS": "0.5", "DELEGATE_DISPATCH_RETRY_MAX_SECONDS": "2",
        "LOG_FORMAT": "json", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = work / "worker.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-B", "-s", str(work / "beat-schedule"),
             "-P", "prefork", "-c", "2", "-n", f"browser-{uuid.uuid4().hex[:8]}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def output() -> str:
        return log.read_text(errors="replace") if log.exists() else ""

    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"celery worker exited with {proc.returncode}:\n{output()[-3000:]}")
        return " ready." in output()

    try:
        wait_until(ready, timeout=60, what="the celery worker to be ready")
        yield SimpleNamespace(proc=proc, output=output)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@pytest.fixture(autouse=True, scope="package")
def _flush_despite_the_worker():
    """The session's worker keeps polling (beat) while a test's teardown TRUNCATEs every table;
    PostgreSQL may pick the TRUNCATE as a deadlock victim. Try the flush again in that case.
    Package-scoped: pytest-django's own database fixture is torn down after function fixtures."""
    from django.core.management.base import CommandError
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self):
        for attempt in range(5):
            try:
                return original(self)
            except CommandError as error:
                if "deadlock" not in str(error.__cause__ or error) or attempt == 4:
                    raise

    TransactionTestCase._fixture_teardown = _fixture_teardown
    yield
    TransactionTestCase._fixture_teardown = original


@pytest.fixture
def demo_data(transactional_db, sandbox, settings):
    """seed_demo's teams, users (password delegate-demo), account, policies and synced catalog."""
    from django.core.management import call_command

    sandbox.faults.reset()
    with open(os.devnull, "w") as quiet:
        call_command("seed_demo", stdout=quiet)


@pytest.fixture
def stack(demo_data, live_server, celery_worker_and_beat, sandbox):
    return SimpleNamespace(url=live_server.url, worker=celery_worker_and_beat, sandbox=sandbox)
