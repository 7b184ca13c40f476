"""The toolkit's error types: every failure a user can act on is one of these.

:func:`S1.cli.run` turns them into one line and an exit code (2 for :class:`UserError`,
3 for :class:`NetworkError`); library code raises them with a ``fix`` that says what to do.

>>> e = UserError("unknown interval '2x'", "use one of 1m 5m 1h 1d")
>>> str(e), e.exit_code
("unknown interval '2x' -- use one of 1m 5m 1h 1d", 2)
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix. ``fix`` says how (printed after the problem)."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        super().__init__(problem if not fix else f"{problem} -- {fix}")
        self.problem = problem
        self.fix = fix


class NetworkError(UserError):
    """A server could not be reached or kept failing after bounded retries."""

    exit_code = 3
