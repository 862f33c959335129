"""Delegate's main pages under load: 50 people at once, each signed in with a session.

Started by bench/load/run.py (which seeds nothing and only reads); the mix is 3 requesters : 1 lead :
1 auditor. Every request is named by page so the report has one row per page:
catalog, my requests, approval queue, request detail, audit search (plus the sign-in).

Bounds: the runner passes --run-time; LOAD_MAX_REQUESTS (default 60,000) stops the run earlier.
Only the host given with --host is contacted (run.py gives a loopback address).
"""
from __future__ import annotations

import os
import random
import re

from locust import FastHttpUser, between, events, task
from locust.exception import StopUser

PASSWORD = os.environ.get("LOAD_PASSWORD", "delegate-load")
MAX_REQUESTS = int(os.environ.get("LOAD_MAX_REQUESTS", "60000"))
THINK = tuple(float(x) for x in os.environ.get("LOAD_THINK", "1,5").split(","))
TEAMS, MEMBERS = 50, 500
OLDER_LINK = re.compile(r'href="\?([^"]*)" rel="next"')
REQUEST_LINK = re.compile(r'href="/requests/(\d+)/"')
AUDIT_OLDER = re.compile(r'href="\?([^"]*before=\d+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_sent = 0


@events.request.add_listener
def _bound(**_kwargs):
    """Stop the whole run after MAX_REQUESTS requests, whatever the clock says."""
    global _sent
    _sent += 1
    if _sent == MAX_REQUESTS:
        from locust.runners import STATE_STOPPING

        runner = _bound.environment.runner if hasattr(_bound, "environment") else None
        if runner is not None and runner.state != STATE_STOPPING:
            runner.quit()


@events.init.add_listener
def _remember(environment, **_kwargs):
    _bound.environment = environment


class Person(FastHttpUser):
    abstract = True
    # Think time between clicks, seconds (LOAD_THINK="min,max"; "0,0" = as fast as answers come).
    wait_time = between(*THINK)
    username = ""

    def on_start(self):
        page = self.client.get("/accounts/login/", name="sign in")
        token = CSRF.search(page.text or "")
        if token is None:
            raise StopUser()
        with self.client.post("/accounts/login/", name="sign in", allow_redirects=False, catch_response=True,
                              data={"username": self.username, "password": PASSWORD, "next": "/",
                                    "csrfmiddlewaretoken": token.group(1)},
                              headers={"Referer": f"{self.host}/accounts/login/"}) as response:
            if response.status_code != 302:
                response.failure(f"sign-in as {self.username} answered {response.status_code}")
                raise StopUser()
            response.success()

    def detail(self, ids):
        if ids:
            self.client.get(f"/requests/{random.choice(ids)}/", name="request detail")


class Requester(Person):
    weight = 3

    def on_start(self):
        self.username = f"user{random.randrange(MEMBERS):03d}"
        super().on_start()
        self.mine: list[str] = []

    @task(3)
    def catalog(self):
        self.client.get("/runbooks/", name="catalog")

    @task(1)
    def catalog_search(self):
        self.client.get(f"/runbooks/?q=Runbook{random.randrange(30):02d}", name="catalog")

    @task(3)
    def my_requests(self):
        response = self.client.get("/requests/?scope=mine", name="my requests")
        older = OLDER_LINK.search(response.text or "")
        if older and random.random() < 0.25:  # one in four reads on: keyset pages (web/paging.py)
            response = self.client.get("/requests/?" + older[1].replace("&amp;", "&"), name="my requests")
        self.mine = REQUEST_LINK.findall(response.text or "") or self.mine

    @task(3)
    def my_request(self):
        self.detail(self.mine)


class Lead(Person):
    weight = 1

    def on_start(self):
        self.username = f"lead{random.randrange(TEAMS):02d}"
        super().on_start()
        self.waiting: list[str] = []

    @task(3)
    def queue(self):
        response = self.client.get("/approvals/", name="approval queue")
        self.waiting = REQUEST_LINK.findall(response.text or "")

    @task(2)
    def waiting_request(self):
        self.detail(self.waiting)

    @task(1)
    def team_requests(self):
        self.client.get("/requests/?scope=all", name="my requests")


class Auditor(Person):
    weight = 1

    def on_start(self):
        self.username = f"auditor{random.randrange(5)}"
        super().on_start()

    @task(4)
    def search(self):
        query = random.choice((
            "",
            f"actor=user{random.randrange(MEMBERS):03d}",
            "action_prefix=request.approved",
            f"team=team{random.randrange(TEAMS):02d}&action_prefix=dispatch.",
            f"resource=i-{random.randrange(TEAMS * 400):017x}",
            f"request={random.randrange(1, 100_000)}",
            f"runbook=AWS-Runbook{random.randrange(30):02d}&since=2025-01-01T00:00",
        ))
        response = self.client.get(f"/audit/?{query}", name="audit search")
        older = AUDIT_OLDER.search(response.text or "")
        if older and random.random() < 0.3:
            self.client.get(f"/audit/?{older.group(1).replace('&amp;', '&')}", name="audit search")

    @task(1)
    def any_request(self):
        self.detail([str(random.randrange(1, 100_000))])
