"""SIGTERM and SIGINT (a scheduler's preemption, Ctrl-C) ask the training loop to stop at the next
step, after a checkpoint, instead of killing it wherever it is.

In one process the request is read from a local flag at every step. With several, it is
shared through Accelerate's trigger (`set_trigger`/`check_trigger`, an all-reduce of a flag that
waits for the device) every `SHARED_CHECK_EVERY` steps, so that every process stops after the
same step without a device sync per step. A second Ctrl-C interrupts at once, as usual. Outside
the main thread (where Python cannot install handlers) signals keep their usual meaning.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from accelerate import Accelerator

HANDLED = (signal.SIGTERM, signal.SIGINT)
SHARED_CHECK_EVERY = 10


class StopSignals:
    """While entered, SIGTERM/SIGINT only record a stop request; `requested()` says, on every
    process alike, whether one came, and `signal` which."""

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.signal: signal.Signals | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum)
        self.accelerator.set_trigger()
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def requested(self, step: int) -> bool:
        """Whether to stop after optimizer step `step` (the same answer on every process)."""
        if self.accelerator.num_processes == 1:
            return self.signal is not None
        if step % SHARED_CHECK_EVERY:
            return False
        stop = self.accelerator.check_trigger()
        if stop and self.signal is None:  # another process got the signal
            self.signal = signal.SIGTERM
        return stop
