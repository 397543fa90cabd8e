"""The run and sweep reports: self-contained HTML pages and their plots, rebuilt from what a run or a sweep
left on disk."""

from emergence.reports.run_page import write_report
from emergence.reports.sweep_page import (
    SWEEP_FILE,
    is_sweep_directory,
    refresh_sweep_report,
    rewrite_sweep_report,
    write_sweep_report,
)

__all__ = ["SWEEP_FILE", "is_sweep_directory", "refresh_sweep_report", "rewrite_sweep_report", "write_report", "write_sweep_report"]
