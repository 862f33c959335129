"""Which catalog runbook undoes another (Stop ↔ Start), for the page after a failure or cancel."""
from __future__ import annotations

# By document name: the runbook that puts the targets back as they were before this one.
UNDOES = {
    "AWS-StopEC2Instance": "AWS-StartEC2Instance",
    "AWS-StopEC2InstanceWithApproval": "AWS-StartEC2Instance",
    "AWS-StartEC2Instance": "AWS-StopEC2Instance",
    "AWS-StartEC2InstanceWithApproval": "AWS-StopEC2Instance",
    "AWS-RestartEC2Instance": "AWS-StartEC2Instance",
    "Delegate-PatchWithApproval": "AWS-StartEC2Instance",
}
# By what a target is left as: a stopped instance is started again whatever stopped it.
BY_STATE = {"stopped": "AWS-StartEC2Instance", "stopping": "AWS-StartEC2Instance"}


def undo_candidates(runbook_name: str, target_states: list[str]) -> list[str]:
    """Document names to suggest, best first: what the targets' state needs, then the runbook's inverse."""
    names = [BY_STATE[state] for state in target_states if state in BY_STATE]
    if runbook_name in UNDOES:
        names.append(UNDOES[runbook_name])
    return list(dict.fromkeys(names))
