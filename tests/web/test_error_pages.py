"""404 and 403 pages keep the navigation, so a person is never stranded."""


def test_not_found_and_forbidden_pages_have_navigation(world, submit, client):
    other = submit(actor=world.dave, team=world.data, parameters={"InstanceId": [world.etl1]})
    client.force_login(world.alice)
    missing = client.get(f"/requests/{other.pk}/")
    assert missing.status_code == 404
    html = missing.content.decode()
    assert 'aria-label="Main"' in html and 'href="/runbooks/"' in html and "<h1>Not found</h1>" in html
    forbidden = client.get("/audit/")  # alice is neither auditor nor lead
    assert forbidden.status_code == 403
    assert 'aria-label="Main"' in forbidden.content.decode() and "Not allowed" in forbidden.content.decode()
