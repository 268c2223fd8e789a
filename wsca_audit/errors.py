"""Error and warning types raised by wsca_audit."""

from __future__ import annotations

import warnings
from typing import Any


class AuditError(ValueError):
    """Bad input to an audit: the message names the problem and how to fix it."""


class AuditWarning(UserWarning):
    """A condition that changes a result; it is also recorded in the report's ``warnings``."""


def renamed(old: str, new: str, old_value: Any, new_value: Any, where: str) -> Any:
    """The value of a keyword renamed from ``old`` to ``new``: the old one still works,
    with a :class:`DeprecationWarning`; both at once are an :class:`AuditError`.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     renamed("metadata", "kinds", {"site": "categorical"}, None, "Auditor")
    ...     str(w[0].message)
    {'site': 'categorical'}
    'Auditor(metadata=...) is now Auditor(kinds=...); the old keyword will be removed'
    """
    if old_value is None:
        return new_value
    if new_value is not None:
        raise AuditError(f"{where}: pass {new}= only ({old}= is its old name)")
    warnings.warn(
        f"{where}({old}=...) is now {where}({new}=...); the old keyword will be removed",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
