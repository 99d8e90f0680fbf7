"""Exceptions raised at ttp_search's boundaries.

Every error names the bad value so the message alone says what to fix.
"""

from __future__ import annotations


class TTPSearchError(Exception):
    """Base class of every error ttp_search raises on purpose."""


class InvalidInputError(TTPSearchError, ValueError):
    """An argument has a wrong value, shape or type."""


class MissingParameterError(InvalidInputError):
    """A configuration lacks a parameter its cost (or steps) function needs."""


class ModelSpecError(InvalidInputError):
    """A model specification (``torchvision:NAME`` or ``file.py:FACTORY``) cannot be resolved."""


class CalibrationError(TTPSearchError):
    """A device calibration is missing, corrupt, incompatible or could not be produced."""


class CalibrationNotFoundError(CalibrationError, FileNotFoundError):
    """No calibration exists for this device fingerprint."""
