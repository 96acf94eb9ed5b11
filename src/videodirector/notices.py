"""One-line warnings for the user (``warning: ...`` on stderr), each said once per run.

Library code calls :func:`warn`; the CLI prints each message as one line. Messages say what was
noticed and what to do about it, like :class:`~videodirector.errors.UserError` messages.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

_seen: set[str] = set()
_sink: Callable[[str], None] | None = None


def warn(message: str) -> None:
    """Report ``message`` once per process (repeats are dropped)."""
    if message in _seen:
        return
    _seen.add(message)
    if _sink is not None:
        _sink(message)
    else:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def set_sink(sink: Callable[[str], None] | None) -> None:
    """Send warnings to ``sink`` (the CLI's console) instead of plain stderr."""
    global _sink
    _sink = sink


def reset() -> None:
    """Forget which messages were said (a new run in the same process, e.g. a test)."""
    _seen.clear()
