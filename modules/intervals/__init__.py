"""Seeded bootstrap confidence intervals on the test split, as a custom TFX component."""

from modules.intervals.component import BootstrapIntervals, MetricIntervals

__all__ = ["BootstrapIntervals", "MetricIntervals"]
