"""The Delegate sandbox: a local endpoint speaking the real AWS wire protocols of SSM, STS and EC2.

Unmodified boto3 and the AWS CLI work against it given only an endpoint URL. Pure Python
(stdlib + PyYAML), no Django: the `sandbox` management command and `python -m
sandbox` both wrap `Sandbox`. See app.py for the interface and faults.py for the
fault-injection knobs.
"""

from .app import Sandbox, serve_until_signalled
from .faults import Block, Faults

__all__ = ["Block", "Faults", "Sandbox", "serve_until_signalled"]
