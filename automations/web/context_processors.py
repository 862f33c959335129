"""Template context shared by every page: the navigation the signed-in user may see."""
from automations import policy, selectors


def navigation(request):
    """What the navigation bar needs: which sections this user has, and the queue size for leads."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    is_lead = selectors.teams_led_by(user).exists()
    # Named approver groups, escalation groups and delegates approve without leading a team.
    is_approver = is_lead or policy.is_any_approver(user, leads_nothing=True)
    return {
        "nav_is_lead": is_lead,
        "nav_is_auditor": user.is_superuser or policy.is_auditor(user),
        "nav_is_approver": is_approver,
        "nav_queue_count": _queue_count(request, user) if is_approver else 0,
    }


def _queue_count(request, user) -> int:
    """Requests and running steps waiting for this user. The queue page has just counted its rows
    (views_approvals); elsewhere count them here."""
    counted = getattr(request, "approval_queue_count", None)
    if counted is not None:
        return counted
    return len(selectors.approval_queue_ids(user)) + len(selectors.waiting_steps_for(user))
