"""How a recipe says no to its user: one line naming the key or file, the value and the fix; exit code 2."""
from __future__ import annotations

import functools
import sys


class UsageError(ValueError):
    """A mistake in the user's config or input files, found before any compute (or instead of a crash).
    The message is shown as it is, so it names the key or file, the value, and what to do."""


def exit_on_usage_error(program: str):
    """Decorate an entry point: a :class:`UsageError` becomes ``<program>: error: <message>`` on stderr and exit
    status 2, without a traceback (the command-line contract shared with ``data_prep``)."""
    def decorate(main):
        @functools.wraps(main)
        def wrapper(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except UsageError as err:
                print(f"{program}: error: {err}", file=sys.stderr)
                sys.exit(2)
        return wrapper
    return decorate
