"""Policy rules at their edges: each test here was written against a mutant that survived the
mutation run (bench/mutation.py; docs/testing-property-mutation.md names the mutant each one kills).

Plain calls into automations.policy over factory rows; no AWS.
"""
import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from automations import policy
from automations.models import FreezeWindow
from tests import factories as f


def window(team=None, *, starts_in_hours: float, lasts_hours: float, name: str = "freeze") -> FreezeWindow:
    now = timezone.now()
    return FreezeWindow.objects.create(name=name, team=team, starts_at=now + dt.timedelta(hours=starts_in_hours),
                                       ends_at=now + dt.timedelta(hours=starts_in_hours + lasts_hours))


class TestCanDelegate:
    def test_a_named_pool_of_another_teams_runbook_gives_no_right_to_delegate_here(self, world):
        # x_can_delegate__mutmut_6 (team=None) and _8 (team filter dropped).
        board = Group.objects.create(name="data-change-board")
        gina = f.UserFactory(username="gina")
        gina.groups.add(board)
        world.data_policy.approver_group = board
        world.data_policy.save()
        assert policy.can_delegate(gina, world.data)
        assert not policy.can_delegate(gina, world.platform)


class TestActiveFreezes:
    def test_the_time_asked_about_decides_not_the_time_of_asking(self, world):
        # x_active_freezes__mutmut_2 (`at and now()`: the window tomorrow is judged by today).
        tomorrow = window(world.platform, starts_in_hours=20, lasts_hours=8)
        assert list(policy.active_freezes(world.platform, at=timezone.now() + dt.timedelta(hours=24))) == [tomorrow]
        assert list(policy.active_freezes(world.platform)) == []

    def test_without_a_team_only_the_global_windows_count(self, world):
        # x_active_freezes__mutmut_19 (team__isnull=None) and _20 (team__isnull=False).
        everyone = window(None, starts_in_hours=-1, lasts_hours=2, name="global")
        window(world.platform, starts_in_hours=-1, lasts_hours=2, name="platform only")
        assert list(policy.active_freezes(None)) == [everyone]
        assert set(policy.active_freezes(world.platform)) == set(FreezeWindow.objects.all())
