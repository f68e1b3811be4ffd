"""The one base of the errors Piecewise says to an operator.

Each names what went wrong and the fix in its message; `exit_code` is what the command
line returns for it (2: a wrong setting or argument to change; 1: a failure of input
files, stores or services; 75, EX_TEMPFAIL: busy, try again), and `prefix` how the
line starts. Programming errors stay what they are and show their traceback.
"""

from __future__ import annotations


class PiecewiseError(Exception):
    exit_code = 1
    prefix = "error"
