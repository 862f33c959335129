"""Issue 19: the AWS re-checks before Start (targets' scope, content hash, execution preview) are
asked at the same time, and judged in the order they always were. Counted and ordered, never timed."""
import threading

from automations import services
from automations.models import AuditEvent, AutomationRequest

Status = AutomationRequest.Status


def test_the_reads_before_start_are_in_flight_together(world, submit, sb):
    request = services.request_approve(request=submit(), actor=world.bob)
    sb.calls.clear()
    held = sb.faults.block("DescribeDocument")  # the content check waits until the others arrived
    seen = {}

    def release_when_the_others_arrive():
        held.arrived.wait(20)
        for _ in range(200):
            arrived = {op for op in ("DescribeInstances", "StartExecutionPreview", "AssumeRole") if sb.calls.of(op)}
            if len(arrived) == 3:
                break
            threading.Event().wait(0.05)
        seen["while the content check was held"] = arrived
        held.release()

    helper = threading.Thread(target=release_when_the_others_arrive)
    helper.start()
    try:
        assert services.request_dispatch(request_id=request.pk) == "started"
    finally:
        held.release()
        helper.join(30)
    assert seen["while the content check was held"] == {"DescribeInstances", "StartExecutionPreview", "AssumeRole"}
    # Start still waited for every answer: one Start, after the held read was answered.
    [start] = sb.calls.of("StartAutomationExecution")
    assert start["time"] > max(c["time"] for c in sb.calls.of("DescribeDocument"))


def test_the_scope_check_still_decides_before_the_preview_and_nothing_starts(world, submit, sb):
    """Both fail now (EC2 refuses the scope read; the preview is throttled): the order the checks
    always ran decides what happens (the scope check's failure, not a put-back for the preview)."""
    request = services.request_approve(request=submit(), actor=world.bob)
    sb.faults.error_next("DescribeInstances", "UnauthorizedOperation", n=5, status=403)
    sb.faults.error_next("StartExecutionPreview", "ThrottlingException", n=5, status=400)
    assert services.request_dispatch(request_id=request.pk) == "failed"
    request.refresh_from_db()
    assert request.status == Status.DISPATCH_FAILED
    assert request.status_reason.startswith("Inventory check failed: UnauthorizedOperation")
    assert sb.calls.of("StartAutomationExecution") == []
    assert not AuditEvent.objects.filter(request=request, action="dispatch.deferred").exists()
