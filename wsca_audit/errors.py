"""Error and warning types raised by wsca_audit."""

from __future__ import annotations


class AuditError(ValueError):
    """Bad input to an audit: the message names the problem and how to fix it."""


class AuditWarning(UserWarning):
    """A condition that changes a result; it is also recorded in the report's ``warnings``."""
