"""Leads land on Approvals; the navigation marks the section a page was opened from."""


def _current(html: str) -> str:
    """The text of the navigation link marked aria-current."""
    start = html.index('aria-current="page">') + len('aria-current="page">')
    return html[start:html.index("<", start)].strip()


def test_approvers_land_on_approvals_and_requesters_on_runbooks(world, client):
    client.force_login(world.bob)
    assert client.get("/")["Location"] == "/approvals/"
    client.force_login(world.alice)
    assert client.get("/")["Location"] == "/runbooks/"


def test_auditors_land_on_the_audit_log(world, client):
    client.force_login(world.carol)
    assert client.get("/")["Location"] == "/audit/"
    assert 'href="/ops/"' in client.get("/audit/").content.decode()


def test_a_request_opened_from_approvals_highlights_approvals(world, submit, client):
    request = submit()
    client.force_login(world.bob)
    queue = client.get("/approvals/").content.decode()
    assert f'href="/requests/{request.pk}/?from=approvals"' in queue
    assert _current(client.get(f"/requests/{request.pk}/?from=approvals").content.decode()) == "Approvals"
    assert _current(client.get(f"/requests/{request.pk}/").content.decode()) == "My requests"
