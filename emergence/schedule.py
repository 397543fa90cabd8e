"""When to measure: every N steps, at powers of two or densely early on, and always at the first and last step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emergence.spec.schema import ScheduleSpec


@dataclass(frozen=True)
class MeasurementSchedule:
    every: int
    log_spaced_until: int
    total_steps: int
    dense_until: int = 0
    dense_every: int = 1

    @classmethod
    def from_spec(cls, schedule: ScheduleSpec, total_steps: int) -> MeasurementSchedule:
        return cls(schedule.every, schedule.log_spaced_until, total_steps, schedule.dense_until, schedule.dense_every)

    def due(self, step: int, every: int | None = None) -> bool:
        """Is ``step`` a measurement step, on the spec's cadence or on a measure's own ``every``?"""
        if step in (0, self.total_steps):
            return True
        if every is not None:
            return step % every == 0
        if step % self.every == 0:
            return True
        if step <= self.dense_until and step % self.dense_every == 0:
            return True
        return step <= self.log_spaced_until and step & (step - 1) == 0

    def steps(self, every: int | None = None) -> list[int]:
        return [s for s in range(self.total_steps + 1) if self.due(s, every)]
