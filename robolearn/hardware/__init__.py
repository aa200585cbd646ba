"""Hardware: the safety layer every robot driver uses (drivers and teleoperation arrive with issue 6)."""

from robolearn.hardware.safety import SafetyFilter, SafetyLimits

__all__ = ["SafetyFilter", "SafetyLimits"]
