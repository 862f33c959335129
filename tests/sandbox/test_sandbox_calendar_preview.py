"""GetCalendarState over ChangeCalendar documents, and StartExecutionPreview/GetExecutionPreview,
over boto3 against the sandbox (shapes as botocore parses them, AWS's error codes)."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.exceptions import ClientError

from sandbox import inventory

REGION = "eu-west-1"


def calendar_text(kind: str, *events: str) -> str:
    lines = ["BEGIN:VCALENDAR", "PRODID:-//AWS//Change Calendar 1.0//EN", "VERSION:2.0", f"X-CALENDAR-TYPE:{kind}"]
    lines += list(events) + ["END:VCALENDAR", ""]
    return "\r\n".join(lines)


def event(uid: str, start: str, end: str, *extra: str) -> str:
    return "\r\n".join(["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20260101T000000Z", f"DTSTART:{start}",
                        f"DTEND:{end}", "SUMMARY:window", *extra, "END:VEVENT"])


def make_calendar(ssm, name: str, content: str) -> None:
    ssm.create_document(Name=name, Content=content, DocumentType="ChangeCalendar", DocumentFormat="TEXT")


class TestGetCalendarState:
    def test_default_open_calendar_is_closed_during_an_event_and_says_when_it_opens(self, ssm):
        make_calendar(ssm, "Freeze-Cal", calendar_text(
            "DEFAULT_OPEN", event("a", "20300105T100000Z", "20300105T120000Z")))
        inside = ssm.get_calendar_state(CalendarNames=["Freeze-Cal"], AtTime="2030-01-05T11:00:00Z")
        assert inside["State"] == "CLOSED"
        assert inside["AtTime"] == "2030-01-05T11:00:00Z"
        assert inside["NextTransitionTime"] == "2030-01-05T12:00:00Z"
        before = ssm.get_calendar_state(CalendarNames=["Freeze-Cal"], AtTime="2030-01-05T09:00:00Z")
        assert (before["State"], before["NextTransitionTime"]) == ("OPEN", "2030-01-05T10:00:00Z")
        after = ssm.get_calendar_state(CalendarNames=["Freeze-Cal"], AtTime="2030-01-05T12:00:00Z")
        assert after["State"] == "OPEN" and "NextTransitionTime" not in after

    def test_default_closed_calendar_opens_only_during_events(self, ssm):
        make_calendar(ssm, "Window-Cal", calendar_text(
            "DEFAULT_CLOSED", event("w", "20300105T020000Z", "20300105T040000Z")))
        assert ssm.get_calendar_state(CalendarNames=["Window-Cal"], AtTime="2030-01-05T01:00:00Z")["State"] == "CLOSED"
        inside = ssm.get_calendar_state(CalendarNames=["Window-Cal"], AtTime="2030-01-05T03:00:00+00:00")
        assert (inside["State"], inside["NextTransitionTime"]) == ("OPEN", "2030-01-05T04:00:00Z")

    def test_recurring_events_are_evaluated(self, ssm):
        # Closed every Saturday 00:00-06:00 UTC (2030-01-05 is a Saturday).
        make_calendar(ssm, "Weekly-Cal", calendar_text(
            "DEFAULT_OPEN", event("r", "20300105T000000Z", "20300105T060000Z", "RRULE:FREQ=WEEKLY")))
        later = ssm.get_calendar_state(CalendarNames=["Weekly-Cal"], AtTime="2030-03-02T05:00:00Z")
        assert (later["State"], later["NextTransitionTime"]) == ("CLOSED", "2030-03-02T06:00:00Z")
        midweek = ssm.get_calendar_state(CalendarNames=["Weekly-Cal"], AtTime="2030-03-05T12:00:00Z")
        assert (midweek["State"], midweek["NextTransitionTime"]) == ("OPEN", "2030-03-09T00:00:00Z")

    def test_several_calendars_are_open_only_if_all_are(self, ssm):
        make_calendar(ssm, "Cal-A", calendar_text("DEFAULT_OPEN", event("a", "20300105T100000Z", "20300105T120000Z")))
        make_calendar(ssm, "Cal-B", calendar_text("DEFAULT_OPEN", event("b", "20300105T110000Z", "20300105T130000Z")))
        state = ssm.get_calendar_state(CalendarNames=["Cal-A", "Cal-B"], AtTime="2030-01-05T11:30:00Z")
        assert (state["State"], state["NextTransitionTime"]) == ("CLOSED", "2030-01-05T13:00:00Z")
        arn = f"arn:aws:ssm:{REGION}:123456789012:document/Cal-A"
        assert ssm.get_calendar_state(CalendarNames=[arn], AtTime="2030-01-05T12:30:00Z")["State"] == "OPEN"

    def test_unknown_calendar_is_invalid_document(self, ssm):
        with pytest.raises(ClientError) as caught:
            ssm.get_calendar_state(CalendarNames=["No-Such-Cal"])
        assert caught.value.response["Error"]["Code"] == "InvalidDocument"

    def test_a_runbook_is_not_a_calendar(self, ssm):
        with pytest.raises(ClientError) as caught:
            ssm.get_calendar_state(CalendarNames=["Delegate-RotateLogs"])
        assert caught.value.response["Error"]["Code"] == "InvalidDocumentType"

    def test_bad_at_time_and_bad_content_are_refused(self, ssm):
        make_calendar(ssm, "Cal-C", calendar_text("DEFAULT_OPEN"))
        with pytest.raises(ClientError) as caught:
            ssm.get_calendar_state(CalendarNames=["Cal-C"], AtTime="next tuesday")
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        with pytest.raises(ClientError) as caught:
            ssm.create_document(Name="Cal-Bad", Content="BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
                                DocumentType="ChangeCalendar", DocumentFormat="TEXT")
        assert caught.value.response["Error"]["Code"] == "InvalidDocumentContent"

    def test_without_at_time_it_is_now(self, ssm):
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (now - dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ"), (now + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
        make_calendar(ssm, "Now-Cal", calendar_text("DEFAULT_OPEN", event("n", start, end)))
        state = ssm.get_calendar_state(CalendarNames=["Now-Cal"])
        assert state["State"] == "CLOSED"
        assert state["NextTransitionTime"] == (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def preview_of(ssm, name: str, **inputs) -> dict:
    started = ssm.start_execution_preview(DocumentName=name, ExecutionInputs={"Automation": inputs})
    return ssm.get_execution_preview(ExecutionPreviewId=started["ExecutionPreviewId"])


class TestExecutionPreview:
    def test_restart_runbook_preview_counts_its_steps_and_targets(self, ssm):
        web1 = inventory.seeded_id("i", REGION, "web-1")
        found = preview_of(ssm, "AWS-RestartEC2Instance", Parameters={"InstanceId": [web1]})
        assert found["Status"] == "Success"
        assert isinstance(found["EndedAt"], dt.datetime)
        automation = found["ExecutionPreview"]["Automation"]
        # stopInstances and startInstances change state (aws:changeInstanceState): Mutating.
        assert automation["StepPreviews"] == {"Mutating": 2, "NonMutating": 0, "Undetermined": 0}
        assert automation["Regions"] == [REGION]
        assert automation["TotalAccounts"] == 1
        assert automation["TargetPreviews"] == [{"Count": 1, "TargetType": "AWS::EC2::Instance"}]

    def test_tag_targets_are_resolved_against_the_live_inventory(self, ssm, client):
        targets = [{"Key": "tag:Team", "Values": ["platform"]}]
        before = preview_of(ssm, "AWS-RestartEC2Instance", TargetParameterName="InstanceId", Targets=targets)
        assert before["ExecutionPreview"]["Automation"]["TargetPreviews"] == [
            {"Count": 4, "TargetType": "AWS::EC2::Instance"}]
        client("ec2").create_tags(Resources=[inventory.seeded_id("i", REGION, "etl-1")],
                                  Tags=[{"Key": "Team", "Value": "platform"}])
        after = preview_of(ssm, "AWS-RestartEC2Instance", TargetParameterName="InstanceId", Targets=targets)
        assert after["ExecutionPreview"]["Automation"]["TargetPreviews"] == [
            {"Count": 5, "TargetType": "AWS::EC2::Instance"}]

    def test_read_only_api_steps_and_child_runbooks(self, ssm):
        child = {"schemaVersion": "0.3", "mainSteps": [
            {"name": "look", "action": "aws:executeAwsApi", "inputs": {"Service": "ec2", "Api": "DescribeInstances"}},
            {"name": "script", "action": "aws:executeScript",
             "inputs": {"Runtime": "python3.11", "Handler": "h", "Script": "def h(e, c):\n  return 1"}}]}
        parent = {"schemaVersion": "0.3", "mainSteps": [
            {"name": "tag", "action": "aws:executeAwsApi",
             "inputs": {"Service": "ec2", "Api": "CreateTags", "Resources": ["i-0"], "Tags": []}},
            {"name": "child", "action": "aws:executeAutomation", "inputs": {"DocumentName": "Preview-Child"}}]}
        import json
        ssm.create_document(Name="Preview-Child", Content=json.dumps(child), DocumentType="Automation")
        ssm.create_document(Name="Preview-Parent", Content=json.dumps(parent), DocumentType="Automation")
        found = preview_of(ssm, "Preview-Parent")
        assert found["ExecutionPreview"]["Automation"]["StepPreviews"] == {
            "Mutating": 1, "NonMutating": 1, "Undetermined": 1}

    def test_parameters_the_document_refuses_fail_the_preview(self, ssm):
        found = preview_of(ssm, "AWS-RestartEC2Instance", Parameters={"InstanceId": ["not-an-instance"],
                                                                        "Nope": ["x"]})
        assert found["Status"] == "Failed"
        assert found["StatusMessage"]
        assert "ExecutionPreview" not in found

    def test_errors(self, ssm):
        with pytest.raises(ClientError) as caught:
            ssm.get_execution_preview(ExecutionPreviewId="00000000-0000-0000-0000-000000000000")
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
        with pytest.raises(ClientError) as caught:
            ssm.start_execution_preview(DocumentName="No-Such-Runbook")
        assert caught.value.response["Error"]["Code"] == "ValidationException"
