"""Domain errors. Each carries a stable `code` that the API returns as JSON and the UI shows as a message."""


class DomainError(Exception):
    code = "invalid"
    status = 400

    def __init__(self, detail: str, *, code: str | None = None, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        if code:
            self.code = code
        self.errors = errors or {}


class NotAllowed(DomainError):
    """The actor may see the object but may not do this to it."""

    code = "not_allowed"
    status = 403


class TransitionNotAllowed(DomainError):
    """The request is not in a status this action applies to (or someone moved it first)."""

    code = "transition_not_allowed"
    status = 409

    def __init__(self, *, current: str, target: str, detail: str | None = None):
        super().__init__(detail or f"A request that is {current} cannot become {target}.")
        self.current, self.target = current, target


class AwsStateConflict(DomainError):
    """AWS refused because the execution is no longer in a state for this action (it finished
    before our status sync saw it): a conflict with the request's state, not bad input."""

    code = "aws_error"
    status = 409


# AWS's answers that mean "the execution (or its step) is not in a state for this call any more".
AWS_STATE_CONFLICTS = frozenset({"InvalidAutomationStatusUpdateException", "InvalidAutomationSignalException"})


def aws_refusal(message: str, aws_code: str) -> DomainError:
    """The domain error for AWS refusing a stop or a signal: 409 when AWS's state moved on, else 400."""
    if aws_code in AWS_STATE_CONFLICTS:
        return AwsStateConflict(message)
    return DomainError(message, code="aws_error")


class InvalidRequest(DomainError):
    """Input that fails validation; `errors` holds per-field messages."""

    code = "invalid"
    status = 400


class ServerOwnedParameter(InvalidRequest):
    """The client tried to set a role (or another value only the server may choose)."""

    code = "server_owned_parameter"


class OutOfScope(DomainError):
    """A target outside the team's scope."""

    code = "out_of_scope"
    status = 403


class OverlappingRequest(DomainError):
    """Open requests of the same runbook already touch these targets; submit again confirmed."""

    code = "overlapping_request"
    status = 409

    def __init__(self, overlapping):
        numbers = ", ".join(f"#{other.pk} ({other.get_status_display().lower()})" for other in overlapping)
        super().__init__(f"This runbook is already requested or running on the same targets: {numbers}. "
                         "Check it first; submit again with the overlap confirmed if you still need this run.",
                         errors={"overlapping_requests": [str(other.pk) for other in overlapping]})
        self.overlapping = list(overlapping)


class ContentChanged(DomainError):
    """SSM serves other content under the request's document version than the request bound."""

    code = "content_changed"
    status = 409


class ContentUnverifiable(DomainError):
    """SSM's content hash for the request's version could not be read (or the request bound none):
    nothing that acts on an approval may go ahead on content nobody could confirm."""

    code = "content_unverifiable"
    status = 503
