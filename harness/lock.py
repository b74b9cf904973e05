"""One writer per output folder: `harness eval` and `harness transfer` hold OUT/.lock while they write to OUT.

The lock is `flock` on that file, so the kernel releases it when its process ends, however it ends: a run killed
with kill -9 leaves no stale lock behind. The file keeps the holder's pid and start time, for the refusal message.
Readers (`harness report OUT`) take no lock."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError

LOCK_NAME = ".lock"


@contextmanager
def writer_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold `out_dir`/.lock (creating the folder) until the block ends; yields the lock file's path.

    Raises HarnessError, naming the holder's pid, while another process (or another open in this one) holds it."""
    out = Path(out_dir)
    path = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise HarnessError(f"output folder {out} cannot be written (--out): {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HarnessError(f"{out} is in use by {_holder(fd)}; wait for it or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays, since unlinking it would let two writers lock two files


def _holder(fd: int) -> str:
    """The holder as its lock file names it; a holder that has not written its pid yet is just 'another run'."""
    pid, _, started = os.pread(fd, 200, 0).decode(errors="replace").strip().partition(" ")
    if not pid.isdigit():
        return "another harness run"
    return f"harness pid {pid}" + (f" (started {started})" if started else "")
