"""The ``performance`` and ``imbalance`` sections (scikit-learn metrics on the clean predictions): ``section``
orchestrates and records, ``metrics`` computes and returns dataclasses."""

from audit.performance.metrics import expected_calibration_error
from audit.performance.section import ImbalanceParams, ImbalanceSection, PerformanceParams, PerformanceSection

__all__ = ["ImbalanceParams", "ImbalanceSection", "PerformanceParams", "PerformanceSection",
           "expected_calibration_error"]
