"""AWS Organizations and the multi-account SSM reads: member accounts, child executions.

Which member accounts a granted OU or account covers, and the child executions of a
multi-account run with the location each one runs in.

boto3 only, no Django models (the gateway's rule); every call goes through the shared read-only
session of the central account's dispatch role and is paced like the other reads.
"""
from __future__ import annotations

import re

from automations.aws.gateway import PermanentAwsError, _call, read_client

OU_ID = re.compile(r"^ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$")
ACCOUNT_ID = re.compile(r"^\d{12}$")


def member_accounts(*, target_ids: list[str], role_arn: str, region: str, orgs_client=None) -> dict[str, list[str]]:
    """{target: [ACTIVE member account ids]} for granted account ids and OU ids (direct members of an OU).

    An account that is not in the organization, or an OU that does not exist, raises
    PermanentAwsError (AccountNotFoundException / ParentNotFoundException, as Organizations says).
    """
    orgs = orgs_client or read_client("organizations", region=region, role_arn=role_arn)
    out: dict[str, list[str]] = {}
    for target in dict.fromkeys(target_ids):
        if OU_ID.match(target):
            accounts: list[str] = []
            kwargs: dict = {"ParentId": target}
            while True:
                page = _call(orgs.list_accounts_for_parent, **kwargs)
                accounts += [a["Id"] for a in page.get("Accounts", []) if a.get("Status", "ACTIVE") == "ACTIVE"]
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
            out[target] = accounts
        elif ACCOUNT_ID.match(target):
            account = _call(orgs.describe_account, AccountId=target)["Account"]
            out[target] = [target] if account.get("Status", "ACTIVE") == "ACTIVE" else []
        else:
            raise PermanentAwsError("InvalidInputException", f"{target} is neither an account id nor an OU id.")
    return out


def location_steps(*, region: str, role_arn: str, parent_id: str, ssm_client=None) -> list[dict]:
    """Where each child runs and how it is doing: the parent's aws:executeAutomation step executions,
    each with its TargetLocation, Outputs.ExecutionId and StepStatus (DescribeAutomationStepExecutions,
    50 a page). AWS documents these steps as the central account's view of its children."""
    ssm = ssm_client or read_client("ssm", region=region, role_arn=role_arn)
    steps: list[dict] = []
    kwargs: dict = {"AutomationExecutionId": parent_id, "MaxResults": 50}
    while True:
        page = _call(ssm.describe_automation_step_executions, **kwargs)
        steps += page.get("StepExecutions", [])
        if not page.get("NextToken"):
            return steps
        kwargs["NextToken"] = page["NextToken"]
