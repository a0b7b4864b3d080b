"""A sweep job's progress inside its current stage: steps done, steps announced, and an ETA.

Why: a sweep's whole-run ETA comes from its rate of configurations, so it is unknown until the
first configuration is in: on the embedded model the setup and the first selection's pass take
minutes (the known filter, statistics, the clean baseline, then one pass for every clamp value
of the first selection). Inside that wait the stepped work still knows how many lock steps it
has (``ServerState.expect``, the same announcements a task's progress bar reads), so the job
reports the current stage's ``done / total`` and an ETA from this stage's own rate.
"""

from __future__ import annotations

import time
from typing import Callable

from unlearn_core.server.job_store import Job


class StageProgress:
    """What ``ServerState.tracked`` hands a sweep's stepped work: counts the current stage's steps
    on the job, and passes the job's cancel and shutdown checks on before each hold."""

    def __init__(self, job: Job, check: Callable[[], None]):
        self.job, self._check = job, check

    def begin(self, phase: str) -> None:
        """A new stage: the job's phase, with its counters at zero and its clock started."""
        j = self.job
        j.phase, j.stage_done, j.stage_total, j.stage_started = phase, 0, 0, time.time()

    def expect(self, n: int) -> None:
        self.job.stage_total += int(n)

    def step(self) -> None:
        self.job.stage_done += 1

    def check(self) -> None:
        self._check()


class Announced:
    """Steps counted, announcements ignored: for work whose total the sweep announced up front
    (a selection's accuracy steps and every clamp value's loss steps at once), so the stage's total
    does not grow as each part starts."""

    def __init__(self, outer: StageProgress):
        self.outer = outer

    def expect(self, n: int) -> None:
        pass

    def step(self) -> None:
        self.outer.step()

    def check(self) -> None:
        self.outer.check()
