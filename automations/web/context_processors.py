"""Template context shared by every page: the navigation the signed-in user may see."""
from automations import policy, selectors


def navigation(request):
    """What the navigation bar needs: which sections this user has, and the queue size for approvers.

    One statement for the roles (policy.navigation_roles, or the view's answer left on the request);
    the queue count only for approvers."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    roles = getattr(request, "navigation_roles", None) or policy.navigation_roles(user)
    return {
        "nav_is_lead": roles.leads_a_team,
        "nav_is_auditor": roles.auditor,
        "nav_is_approver": roles.approver,
        "nav_queue_count": _queue_count(request, user, roles) if roles.approver else 0,
    }


def _queue_count(request, user, roles: policy.NavigationRoles) -> int:
    """Requests and running steps waiting for this user. The queue page has just counted its rows
    (views_approvals); elsewhere count them here."""
    counted = getattr(request, "approval_queue_count", None)
    if counted is not None:
        return counted
    return len(selectors.approval_queue_ids(user, roles)) + len(selectors.waiting_steps_for(user))
