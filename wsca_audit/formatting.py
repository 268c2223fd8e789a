"""How numbers, intervals, tables and pages look, in one place for report, card and CLI.

Also :func:`json_safe`, the one conversion every JSON-ready result goes through (NaN and
inf become null, numpy scalars Python numbers).
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from typing import Any

__all__ = [
    "ci_text",
    "fmt",
    "html_page",
    "img_tag",
    "json_safe",
    "percent",
    "png_bytes",
    "text_table",
]

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f4f4f4}figure{margin:1em 0}figcaption{font-size:0.9em;color:#555}"""


def json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python numbers, tuples and arrays -> lists
    (recursively).

    Examples
    --------
    >>> import numpy as np
    >>> json_safe({"a": (np.float32(0.5), float("nan")), "b": np.array([1, 2])})
    {'a': [0.5, None], 'b': [1, 2]}
    """
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if getattr(x, "ndim", 0) and hasattr(x, "tolist"):  # a numpy array or tensor: a list
        return json_safe(x.tolist())
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def fmt(x: Any, digits: int = 3) -> str:
    """A number (numpy's too) with ``digits`` decimals; ``-`` for None, NaN, inf and
    anything that is not a number.

    Examples
    --------
    >>> fmt(0.12345), fmt(None), fmt(float("nan"), 2), fmt({"a": 1})
    ('0.123', '-', '-', '-')
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return "-"  # None, and whatever a foreign report holds
    if not math.isfinite(x):
        return "-"
    return f"{float(x):.{digits}f}"


def percent(level: Any) -> str:
    """An interval's level as a percentage (``0.95`` -> ``95%``); ``-`` when it is none.

    Examples
    --------
    >>> percent(0.95), percent(0.9), percent(0.999), percent(None)
    ('95%', '90%', '99.9%', '-')
    """
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not math.isfinite(level):
        return "-"
    return f"{level * 100:.4g}%"


def ci_text(block: dict | None, digits: int = 3) -> str:
    """``value [ci_low, ci_high]`` of a metric block (``-`` when there is none).

    Examples
    --------
    >>> ci_text({"value": 0.5, "ci_low": 0.4, "ci_high": None})
    '0.500 [0.400, -]'
    """
    if not block:
        return "-"
    v, lo, hi = block.get("value"), block.get("ci_low"), block.get("ci_high")
    return f"{fmt(v, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def text_table(rows: list[tuple]) -> list[str]:
    """Fixed-width lines of a table whose first row is the header (a rule below it)."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def png_bytes(fig, dpi: int = 110) -> bytes:
    """A matplotlib Figure rendered as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a data URI (the page stays one file)."""
    data = base64.b64encode(png).decode()
    return (
        f"<img alt='{html.escape(alt)}' style='max-width:100%' src='data:image/png;base64,{data}'>"
    )


def html_page(title: str, body: str) -> str:
    """The self-contained HTML page shell shared by reports and model cards."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
{body}
</body></html>
"""
