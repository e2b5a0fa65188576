"""Stop signals: SIGTERM and SIGUSR2 end a run at the next step boundary, with a checkpoint saved."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class TrainingStopped(Exception):
    """A stop signal was honoured: a complete checkpoint is saved and the run can be resumed."""

    def __init__(self, message: str, forward=None):
        super().__init__(message)
        self.forward = forward  # hands the signal on to the handler installed before gptfit's


class StopSignals:
    """SIGTERM, and SIGUSR2 (what SLURM/submitit send before preemption or the time limit), ask the run
    to save a checkpoint at the next step boundary and stop. The handlers that were installed before
    (submitit's requeue) are restored afterwards and can be called with `forward`."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            log.warning("%s received: saving a checkpoint at the next step, then stopping", signal.Signals(signum).name)
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        handler = self.previous.get(self.received)
        if callable(handler):
            handler(self.received, None)
