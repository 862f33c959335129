import re
from automations import services
def test_view(world, submit, client):
    world.platform_policy.approvals_required = 2
    world.platform_policy.save()
    earlier = services.request_approve(request=submit(), actor=world.bob)
    r = submit(justification="disk full")
    client.force_login(world.bob)
    html = client.get(f"/requests/{r.pk}/").content.decode()
    s = html[html.find('<section class="decision"'):html.find("</section>")+10]
    print(re.sub(r"\n\s*\n+", "\n", s))
    q = client.get("/approvals/").content.decode()
    print(re.sub(r"\n\s*\n+", "\n", q[q.find("<main"):q.find("</main>")])[:3000])
