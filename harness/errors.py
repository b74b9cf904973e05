"""The one error type users see: a one-line message, exit code 2, no traceback."""


class HarnessError(Exception):
    """Bad input or environment. The message names the culprit (file, field, flag) in one line."""

    exit_code = 2


class Interrupted(HarnessError):
    """Ctrl-C during a run: finished units are stored, the run resumes on the same command."""

    exit_code = 130
