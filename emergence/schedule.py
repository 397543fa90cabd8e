"""When to measure: every N steps, at powers of two early on, and always at the first and last step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeasurementSchedule:
    every: int
    log_spaced_until: int
    total_steps: int

    def due(self, step: int, every: int | None = None) -> bool:
        """Is ``step`` a measurement step, on the spec's cadence or on a measure's own ``every``?"""
        if step in (0, self.total_steps):
            return True
        if every is not None:
            return step % every == 0
        if step % self.every == 0:
            return True
        return step <= self.log_spaced_until and step & (step - 1) == 0

    def steps(self, every: int | None = None) -> list[int]:
        return [s for s in range(self.total_steps + 1) if self.due(s, every)]
