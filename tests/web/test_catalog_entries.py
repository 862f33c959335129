"""One id per runbook across pages and API, and a compact catalog: one entry per runbook with its
regions (and teams) as a choice, not one tall card per region and team."""
import re

from automations.models import Membership
from tests import factories as f


def _second_region(world, region="us-east-1"):
    """The same document in another region: its own runbook id, and policy ids that differ from it."""
    other = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account, region=region)).runbook
    f.TeamRunbookFactory(team=world.data, runbook=other)  # pushes policy ids away from runbook ids
    policy = f.TeamRunbookFactory(team=world.platform, runbook=other)
    assert policy.pk != other.pk
    return other, policy


class TestOneId:
    def test_the_request_page_the_detail_page_and_the_api_take_the_runbook_id(self, world, sb, client):
        other, policy = _second_region(world)
        client.force_login(world.alice)
        page = client.get(f"/runbooks/{other.pk}/request/")
        assert page.status_code == 200
        assert page.context["runbook"] == other and page.context["policy"] == policy
        api = client.get(f"/api/v1/runbooks/{other.pk}/").json()
        assert (api["id"], api["name"], api["region"]) == (other.pk, other.name, "us-east-1")
        assert other.pk in {row["id"] for row in client.get("/api/v1/runbooks/").json()}
        detail = client.get(f"/runbooks/{other.pk}/").content.decode()
        assert f'href="/runbooks/{other.pk}/request/"' in detail
        # The picker shares the id too.
        assert client.get(f"/runbooks/{other.pk}/pick/InstanceId/").status_code == 200

    def test_a_person_in_two_teams_chooses_the_team_and_a_team_not_offering_it_is_a_404(self, world, sb, client):
        Membership.objects.create(user=world.alice, team=world.data, role="member")
        client.force_login(world.alice)
        url = f"/runbooks/{world.runbook.pk}/request/"
        assert client.get(url).context["policy"] == world.data_policy  # first team by name
        page = client.get(url, {"team": "platform"})
        assert page.context["policy"] == world.platform_policy
        html = page.content.decode()
        assert 'name="team" value="platform"' in html  # the POST keeps the team chosen
        assert client.get(url, {"team": "nobody"}).status_code == 404
        client.force_login(world.dave)  # data only
        assert client.get(url, {"team": "platform"}).status_code == 404


class TestCompactCatalog:
    def test_one_entry_per_runbook_with_its_regions_as_a_choice(self, world, sb, client):
        other, _ = _second_region(world)
        client.force_login(world.alice)
        response = client.get("/runbooks/")
        html = response.content.decode()
        assert html.count('class="runbook-entry"') == 1
        assert "1 runbook" in html
        entry = html[html.index('class="runbook-entry"'):]
        select = entry[entry.index('<select name="runbook"'):entry.index("</select>")]
        options = dict(re.findall(r'<option value="(\d+)"[^>]*>([^<]+)</option>', select))
        assert options == {str(world.runbook.pk): "eu-west-1", str(other.pk): "us-east-1"}
        # Choosing a region goes to that runbook's own request page.
        go = client.get("/runbooks/request/", {"runbook": other.pk, "team": "platform"})
        assert go.status_code == 302 and go["Location"] == f"/runbooks/{other.pk}/request/?team=platform"

    def test_the_choice_refuses_what_the_person_may_not_request(self, world, sb, client):
        hidden = f.RunbookVersionFactory(runbook=f.RunbookFactory(account=world.account, name="Other")).runbook
        client.force_login(world.alice)
        assert client.get("/runbooks/request/", {"runbook": hidden.pk}).status_code == 404
        assert client.get("/runbooks/request/", {"runbook": "x"}).status_code == 404
        assert client.get("/runbooks/request/", {"runbook": world.runbook.pk, "team": "data"}).status_code == 404

    def test_the_catalog_is_compact_and_counts_runbooks_not_regions(self, world, sb, client):
        for region in ("us-east-1", "us-west-2", "ap-south-1"):
            _second_region(world, region)
        client.force_login(world.alice)
        html = client.get("/runbooks/").content.decode()
        assert html.count('class="runbook-entry"') == 1 and "1 runbook<" in html
        assert "runbook-card" not in html  # no tall card per region
        assert "<dl" not in html[html.index('id="catalog-results"'):]  # details live on the runbook's page
