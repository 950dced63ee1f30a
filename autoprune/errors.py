"""The one exception type that reaches users as a one-line message (exit status 2)."""

from __future__ import annotations

# Exit statuses of `autoprune search`: 0 done within budget, 1 a crash (a bug: traceback),
# 2 bad input or a search that cannot go on (one line), 3 done but the exported model is over the
# budget, 130 interrupted by Ctrl-C and 143 by SIGTERM (finished trials kept; continue with --resume).
EXIT_BAD_INPUT = 2
EXIT_OVER_BUDGET = 3


class UserError(Exception):
    """Bad input from the user: a flag, a file, a model or a budget that cannot work.

    The CLI prints ``error: <message>`` and exits with status 2, without a traceback. The message
    says what is wrong and how to fix it.
    """


def missing_extra(package: str, extra: str) -> UserError:
    """The error for an optional dependency that is not installed."""
    return UserError(
        f"{package} is not installed; install the extra with: pip install 'autoprune[{extra}]'"
    )
