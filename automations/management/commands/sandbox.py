"""`manage.py sandbox`: run the local AWS endpoint (SSM, STS, EC2) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand

from sandbox import Sandbox, serve_until_signalled


class Command(BaseCommand):
    help = "Serve the Delegate sandbox: SSM, STS and EC2 wire protocols on one loopback port."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("SANDBOX_PORT", "4566")))
        parser.add_argument(
            "--state-file",
            default=os.environ.get("SANDBOX_STATE_FILE") or None,
            help="JSON file the state is loaded from and saved to (default: none, in memory)",
        )
        parser.add_argument(
            "--time-scale",
            type=float,
            default=float(os.environ.get("SANDBOX_TIME_SCALE", "1")),
            help="divide every runbook and EC2 duration by this (e.g. 20 for demos)",
        )
        parser.add_argument("--account-id", default=os.environ.get("SANDBOX_ACCOUNT_ID", "123456789012"))

    def handle(self, *args, **options):
        sandbox = Sandbox(
            host=options["host"],
            port=options["port"],
            state_file=options["state_file"],
            time_scale=options["time_scale"],
            account_id=options["account_id"],
        )

        def announce(text: str) -> None:
            self.stdout.write(text)
            self.stdout.flush()

        serve_until_signalled(sandbox, announce=announce)
