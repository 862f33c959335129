"""Delegate's portal app: self-service requests for AWS Systems Manager Automation runbooks."""
