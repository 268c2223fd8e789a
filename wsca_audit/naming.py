"""Safe names: metadata names turned into MLflow keys and file names.

Metadata names come from user data ("scanner vendor/model", "../x"); every key or file
name derived from one goes through :func:`sanitize_name`, so no path traversal or
invalid MLflow key can arise, and the mapping is stable across versions.
"""

from __future__ import annotations

import re

__all__ = ["interval_metrics", "sanitize_name", "task_keys"]


def sanitize_name(name: str) -> str:
    """A metric/tag/file-safe version of a metadata name (stable across versions).

    Characters outside ``[A-Za-z0-9_.-]`` become ``_``; dots may not start the name or
    repeat (so no ``..`` path component can arise).

    Examples
    --------
    >>> sanitize_name("scanner vendor/model (%)")
    'scanner_vendor_model_'
    >>> sanitize_name("../etc")
    'etc'
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))
    safe = re.sub(r"\.{2,}", ".", safe).lstrip("._").rstrip(".") or "task"
    return safe[:200].rstrip(".") or "task"


def task_keys(names: list[str]) -> dict[str, str]:
    """Map task names to unique sanitised keys (``_2``, ``_3``... on collisions)."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = key = sanitize_name(name)
        i = 2
        while key in used:
            key = f"{base}_{i}"
            i += 1
        used.add(key)
        keys[name] = key
    return keys


def interval_metrics(name: str, block: dict | None, value_key: str = "value") -> dict[str, float]:
    """MLflow metrics of one interval block: ``name``, ``name_ci_low``, ``name_ci_high``.

    Examples
    --------
    >>> interval_metrics("wsca.x.usage", {"value": 0.5, "ci_low": 0.4, "ci_high": None})
    {'wsca.x.usage': 0.5, 'wsca.x.usage_ci_low': 0.4}
    """
    out: dict[str, float] = {}
    for suffix, field in (("", value_key), ("_ci_low", "ci_low"), ("_ci_high", "ci_high")):
        if block and block.get(field) is not None:
            out[name + suffix] = float(block[field])
    return out
