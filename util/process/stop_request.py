"""Ctrl-C and SIGTERM as a request the training loop answers between steps, so a save is never cut short.

The entry point installs it (`StopRequest()`) and restores the handlers it found when training ends
(`restore()`), so a caller that trains in-process keeps its own Ctrl-C. A terminal's Ctrl-C reaches the whole
process group, data-loading workers included: only the process that installed the handler answers (and says
so once); a forked worker ignores the request, and the loop stops it with its loader.
"""
import logging
import os
import signal

from util.process import distributed

log = logging.getLogger("train")


class StopRequest:
    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    active = None  # the request in force (a test or a job wrapper may ask it to stop: request())

    def __init__(self):
        self.signum = None
        self.previous = {}
        self.pid = os.getpid()
        for sig in self.SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        StopRequest.active = self

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self.previous = {}
        if StopRequest.active is self:
            StopRequest.active = None

    def _handle(self, signum, frame):
        if os.getpid() != self.pid:  # a forked loader worker: the training process answers for the run
            return
        self.request(signum)

    def request(self, signum):
        """Ask the loop to stop after the step in progress (what a signal does)."""
        if self.signum is None:
            log.warning("%s received: finishing this step, saving a resumable checkpoint, then stopping "
                        "(resume with --continue_train)", signal.Signals(signum).name)
        self.signum = signum

    def __bool__(self):
        return self.signum is not None

    def agreed(self):
        """Whether any process was asked to stop. Every rank calls this at the same point of the loop and gets
        the same answer, so all of them stop after the same step (the signal reaches them at slightly
        different moments, and a rank that went on alone would wait forever for the others)."""
        signum = distributed.max_over_ranks(self.signum or 0)
        if signum:
            self.signum = self.signum or signum
        return bool(signum)

    @property
    def exit_code(self):
        return 128 + self.signum
