"""`python -m sandbox --port 4566 [--host H] [--state-file PATH] [--time-scale X]`, no Django."""

from __future__ import annotations

import argparse
import logging
import os

from .app import Sandbox, serve_until_signalled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SANDBOX_PORT", "4566")))
    parser.add_argument("--state-file", default=os.environ.get("SANDBOX_STATE_FILE") or None)
    parser.add_argument("--time-scale", type=float, default=float(os.environ.get("SANDBOX_TIME_SCALE", "1")))
    parser.add_argument("--account-id", default=os.environ.get("SANDBOX_ACCOUNT_ID", "123456789012"))
    parser.add_argument("--no-seed", action="store_true", help="start without documents and inventory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sandbox = Sandbox(
        host=args.host,
        port=args.port,
        state_file=args.state_file,
        time_scale=args.time_scale,
        account_id=args.account_id,
        seed=not args.no_seed,
    )
    serve_until_signalled(sandbox, announce=lambda text: print(text, flush=True))


if __name__ == "__main__":
    main()
