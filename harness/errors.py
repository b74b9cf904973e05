"""The one error type users see: a one-line message, exit code 2, no traceback."""


class HarnessError(Exception):
    """Bad input or environment. The message names the culprit (file, field, flag) in one line."""

    exit_code = 2


class Interrupted(HarnessError):
    """Ctrl-C (or SIGTERM) during a run: finished units are stored, the run resumes on the same command."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (Slurm, Kubernetes, `timeout`), raised where the run is so that it stops as at Ctrl-C: the unit in
    flight is dropped, finished units stay stored. The command then exits with 128 + 15."""

    exit_code = 143
