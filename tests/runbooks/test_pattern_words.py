"""A value that misses a runbook's allowedPattern is refused in plain words; the regular expression
itself is shown only on demand (a disclosure on the form, the schema in the API)."""
import pytest

from automations.runbooks import pattern_words
from automations.runbooks.validation import validate_value

PATTERNS = {
    r"^i-[0-9a-f]{8,17}$": "“i-”, then 8 to 17 characters from 0–9 or a–f",
    r"^[a-z][a-z0-9-]*$": "one character from a–z, then any number of characters from a–z, 0–9 or “-”",
    r"^[a-zA-Z0-9_.-]{1,128}$": "1 to 128 characters from a–z, A–Z, 0–9, “_”, “.” or “-”",
    r"^\d{12}$": "12 digits",
    r"^(Yes|No)$": None,  # groups: no sentence; the generic words apply
    r"^$|^[a-z0-9-]{1,2048}$": "nothing, or 1 to 2048 characters from a–z, 0–9 or “-”",
    r"^[^/]+$": None,  # negated classes are not put into words
}


@pytest.mark.parametrize(("pattern", "words"), PATTERNS.items())
def test_common_patterns_in_words(pattern, words):
    assert pattern_words.describe(pattern) == words


def test_the_refusal_never_quotes_the_regex():
    for pattern, words in PATTERNS.items():
        spec = {"type": "String", "required": True, "allowedPattern": pattern}
        value, errors = validate_value("P", spec, "!!no/pe!!")
        assert value is None and len(errors) == 1, pattern
        assert pattern not in errors[0], errors[0]
        if words:
            assert errors[0] == f"Enter {words}.", errors[0]
        else:
            assert errors[0] == "Does not have the form this parameter needs; its description says what it takes."


def test_the_form_shows_the_rule_in_words_and_the_regex_only_in_a_disclosure(world, sb, client):
    from automations.models import RunbookVersion

    version = world.version
    version.parameters["InstanceId"]["allowedPattern"] = r"^i-[0-9a-f]{8,17}$"
    RunbookVersion.objects.filter(pk=version.pk).update(parameters=version.parameters)
    client.force_login(world.alice)
    html = client.get(f"/runbooks/{world.runbook.pk}/request/").content.decode()
    assert "Must be “i-”, then 8 to 17 characters from 0–9 or a–f." in html
    rule = html[html.index("<details class=\"pattern\">"):]
    rule = rule[:rule.index("</details>")]
    assert "<summary>Exact rule</summary>" in rule and "^i-[0-9a-f]{8,17}$" in rule
    assert html.count("^i-[0-9a-f]{8,17}$") == 1
