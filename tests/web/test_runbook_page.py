"""The runbook page shares its id with the API and says what the runbook needs and who approves."""
from automations import services


def test_one_id_for_the_page_and_the_api_with_parameters_approvers_and_success_rate(world, submit, sb, client):
    done = services.request_approve(request=submit(), actor=world.bob)
    services.request_reject(request=submit(), actor=world.bob, comment="not now")
    client.force_login(world.alice)
    page = client.get(f"/runbooks/{world.runbook.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    api = client.get(f"/api/v1/runbooks/{world.runbook.pk}/").json()
    assert api["name"] == world.runbook.name and world.runbook.name.rsplit("/", 1)[-1] in html
    assert f'href="/api/v1/runbooks/{world.runbook.pk}/"' in html
    assert "<code>InstanceId</code>" in html and "stopInstances" in html
    assert "bob, frank" in html  # platform's leads approve it
    assert f'href="/requests/{done.pk}/"' in html
    client.force_login(world.carol)  # an auditor is in no team that offers it
    assert client.get(f"/runbooks/{world.runbook.pk}/").status_code == 404


def test_catalog_says_whose_account_and_never_repeats_the_summary(world, sb, client):
    from automations.models import Runbook

    Runbook.objects.filter(pk=world.runbook.pk).update(
        description="Restarts one instance.\n\nIt stops, then starts.", owner_kind="self")
    client.force_login(world.alice)
    html = client.get("/runbooks/").content.decode()
    assert "Owned by me" not in html and ("Our account&#x27;s" in html or "Our account's" in html)
    assert html.count("Restarts one instance.") == 1  # the summary once; no expander repeating it
    assert "Full description" not in html and f'href="/runbooks/{world.runbook.pk}/"' in html


def test_owner_words_never_claim_a_person_owns_a_document(world, sb, client):
    from automations.models import Runbook

    client.force_login(world.alice)
    for kind, words in (("self", "Our account"), ("private", "Shared with our account")):
        Runbook.objects.filter(pk=world.runbook.pk).update(owner_kind=kind, owner="111122223333")
        for url in ("/runbooks/", f"/runbooks/{world.runbook.pk}/"):
            html = client.get(url).content.decode().replace("&#x27;", "'")
            assert words in html, (kind, url)
            assert "Owned by me" not in html and "Shared with me" not in html, (kind, url)
