"""The two admin bases: read-only models can be listed but never added; audited ones can be added."""
import pytest


@pytest.mark.django_db
@pytest.mark.parametrize("model, can_add", [
    ("auditevent", False), ("notificationdelivery", False), ("stepapproval", False),  # ReadOnlyAdmin
    ("runbookversion", False),  # versions come from SSM only
    ("team", True), ("freezewindow", True),  # AuditedAdmin
])
def test_admin_lists_every_model_and_adds_only_where_allowed(admin_client, model, can_add):
    assert admin_client.get(f"/admin/automations/{model}/").status_code == 200
    assert admin_client.get(f"/admin/automations/{model}/add/").status_code == (200 if can_add else 403)
