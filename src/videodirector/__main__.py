"""``videodirector`` and ``python -m videodirector``: take Ctrl-C first, then import the CLI.

The interrupt handler goes in before the CLI's imports (typer, rich, then torch), so a Ctrl-C during
start-up always stops the run with one line and status 130.
"""

from __future__ import annotations

import signal
import sys


def _stop(signum: int, frame: object) -> None:  # noqa: ARG001
    print("error: interrupted; nothing was written under a final name", file=sys.stderr, flush=True)
    raise SystemExit(130)


def main() -> None:
    signal.signal(signal.SIGINT, _stop)
    from .cli import main as cli_main  # installs its own handler for the run

    cli_main()


if __name__ == "__main__":
    main()
