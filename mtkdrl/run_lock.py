"""One run per folder: an exclusive lock on `output_dir` for the run's lifetime.

The main process holds an `flock` on `output_dir/.mtkdrl.lock`, which the kernel drops when the
process ends however it ends, so a killed run's lock is simply taken over. Its outcome is shared
with every process, so all refuse together. The file also says who holds it, for the message, and
is removed when the run ends (a lock taken on a file that was removed meanwhile is retried).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from .errors import MtkdrlError, first_line

LOCK_NAME = ".mtkdrl.lock"


class RunLock:
    """The held lock of one run folder (a no-op on processes other than the main one)."""

    def __init__(self, handle: IO[str] | None, path: Path | None = None) -> None:
        self.handle, self.path = handle, path

    @classmethod
    def acquire(cls, accelerator: Accelerator, run_dir: Path) -> RunLock:
        """Lock `run_dir` before anything in it is removed or written; one line if another run
        holds it."""
        handle, refusal = None, None
        if accelerator.is_main_process:
            handle, refusal = _try_lock(run_dir)
            while handle is None and refusal is None:  # the file was removed as it was locked
                handle, refusal = _try_lock(run_dir)
        if accelerator.num_processes > 1:
            shared = [refusal]
            broadcast_object_list(shared)
            refusal = shared[0]
        if refusal is not None:
            raise MtkdrlError(refusal)
        return cls(handle, run_dir / LOCK_NAME)

    def release(self) -> None:
        """Remove the lock file, then unlock it (whoever opened it meanwhile retries)."""
        if self.handle is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def _try_lock(run_dir: Path) -> tuple[IO[str] | None, str | None]:
    """The locked file (None, None: it was removed while being locked, try again), or why not."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    try:  # never through a symlink: a run folder's files are its own
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        return None, f"output_dir: cannot open {path} ({first_line(err)}); remove it"
    handle = os.fdopen(descriptor, "r+")  # held open for the run's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        return None, (
            f"output_dir {run_dir} is in use by another run ({holder}); wait for it to end, "
            "or choose another output_dir"
        )
    try:
        current = os.stat(path, follow_symlinks=False).st_ino
    except FileNotFoundError:
        current = None
    if current != os.fstat(handle.fileno()).st_ino:  # its holder removed it as it ended
        handle.close()
        return None, None
    started = datetime.datetime.now().isoformat(timespec="seconds")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
    handle.flush()
    return handle, None
