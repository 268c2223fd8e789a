"""The verdict of a task, the sentence that explains it, and the audit size that would
decide it when the data at hand do not.

Rules, in order (intervals are the report's bootstrap intervals, at ``ci_level``; thresholds are
:class:`~wsca_audit.Thresholds`):

1. ``not_encoded``: the encoding interval lies below its threshold (AUC 0.6 or R² 0.05).
2. ``encoded_not_used`` by equivalence: encoded, and the whole ``effect`` interval lies
   within ``±effect`` logit-sd (0.25): whatever the head reads, it moves the score by less.
3. ``uses``: encoded, the usage permutation test significant (BH-adjusted p at or
   below ``alpha``), and either the usage interval at or above ``usage`` (0.25) or the
   effect interval beyond ``±effect``. For a head of three or more classes only the
   effect decides ``uses``: usage is then the canonical correlation over all its class
   contrasts, which a head that spans much of a small embedding reaches without reading
   the variable (measured: 0.44 to 0.85 for shortcut-free ten-class digit models), so it
   has no threshold of the binary kind; its upper end still bounds every contrast (rule 4).
4. ``encoded_not_used``: encoded and the usage interval below ``usage``.
5. ``inconclusive`` otherwise, with ``samples_needed``: the audit size at which, with the
   same point estimates, the intervals would clear the thresholds that decide (with 80%
   power: the interval half-width shrinks as one over the square root of the size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from .formatting import ci_text, fmt
from .verdict import ENCODED_NOT_USED, INCONCLUSIVE, NOT_ENCODED, USES, Thresholds

# the z of 80% power on top of an interval's own z (see _size_for)
_Z_POWER = NormalDist().inv_cdf(0.8)
_MAX_SAMPLES = 10_000_000


@dataclass(frozen=True)
class Decision:
    """A task's verdict, the sentence with the numbers that decided it, and (for
    ``inconclusive``) the audit size and number of informative samples that would decide."""

    verdict: str
    reason: str
    samples_needed: int | None = None
    informative_needed: int | None = None


def _ok(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def decide(
    name: str, task: dict, thresholds: Thresholds, n_samples: int, level: float = 0.95
) -> Decision:
    """Apply the rules of this module to one task block of a report.

    Parameters
    ----------
    name : str
        The metadata variable (used in the sentence).
    task : dict
        The task's report block (``encoding``, ``usage``, optionally ``effect``).
    thresholds : Thresholds
    n_samples : int
        Valid samples of the task (the size ``samples_needed`` scales).
    level : float, default=0.95
        The level of the report's intervals (``ci_level``), for ``samples_needed``.

    Examples
    --------
    >>> t = {"encoding": {"metric": "auc", "value": 0.9, "ci_low": 0.85, "ci_high": 0.95},
    ...      "usage": {"value": 0.1, "ci_low": 0.0, "ci_high": 0.3, "p_value": 0.4},
    ...      "effect": {"value": 0.02, "ci_low": -0.05, "ci_high": 0.09}}
    >>> d = decide("scanner", t, Thresholds(), 800)
    >>> d.verdict
    'encoded_not_used'
    >>> d.reason
    'scanner is encoded (AUC 0.900 [0.850, 0.950]) but moves the score by 0.02 [-0.05, 0.09] sd, within ±0.25 sd'
    """
    enc, use = task.get("encoding") or {}, task.get("usage") or {}
    eff = task.get("effect") or {}
    metric = enc.get("metric", "auc")
    enc_thr = thresholds.auc if metric == "auc" else thresholds.r2
    enc_text = f"{metric.upper() if metric == 'auc' else 'R²'} {ci_text(enc)}"
    enc_lo, enc_hi = enc.get("ci_low"), enc.get("ci_high")
    if not _ok(enc_lo, enc_hi):
        return Decision(
            INCONCLUSIVE,
            f"the encoding of {name} has no interval ({enc_text}): run with n_bootstrap > 0",
        )
    if enc_hi < enc_thr:
        return Decision(
            NOT_ENCODED,
            f"{name} is not readable from the embedding: encoding {enc_text} is below "
            f"{fmt(enc_thr, 2)}",
        )
    encoded = enc_lo >= enc_thr
    delta = thresholds.effect
    e_lo, e_hi, e_v = eff.get("ci_low"), eff.get("ci_high"), eff.get("value")
    has_effect = _ok(e_lo, e_hi, e_v)
    negligible = has_effect and -delta < e_lo and e_hi < delta
    # a cross-fitted size is oriented by the half that chose it: below 0 the halves
    # disagree, which is noise, not a large effect the other way
    oriented = bool(eff.get("selection"))
    large = has_effect and (e_lo >= delta or (e_hi <= -delta and not oriented))
    u_lo, u_hi, p = use.get("ci_low"), use.get("ci_high"), use.get("p_value")
    has_usage = _ok(u_lo, u_hi)
    significant = _ok(p) and p <= thresholds.alpha
    use_text = f"usage {ci_text(use)}"
    eff_text = f"{ci_text(eff, 2)} sd{_groups(eff)}" if has_effect else ""
    p_text = f"p = {fmt(p, 3)}" if _ok(p) else "no permutation test"

    if encoded and negligible:
        return Decision(
            ENCODED_NOT_USED,
            f"{name} is encoded ({enc_text}) but moves the score by {eff_text}, "
            f"within ±{fmt(delta, 2)} sd",
        )
    one_contrast = not use.get("n_contrasts")
    if encoded and significant and has_usage and one_contrast and u_lo >= thresholds.usage:
        extra = f"; it moves the score by {eff_text}" if has_effect else ""
        return Decision(
            USES,
            f"{use_text} is above {fmt(thresholds.usage, 2)} and {p_text}{extra}",
        )
    if encoded and significant and large:
        return Decision(
            USES,
            f"{name} moves the score by {eff_text}, beyond ±{fmt(delta, 2)} sd, and {p_text} "
            f"({use_text})",
        )
    if encoded and has_usage and u_hi < thresholds.usage:
        return Decision(
            ENCODED_NOT_USED,
            f"{name} is encoded ({enc_text}) but {use_text} is below {fmt(thresholds.usage, 2)}",
        )

    # inconclusive: what straddles, and the size that would decide
    parts = []
    if not encoded:
        parts.append(f"encoding {enc_text} straddles {fmt(enc_thr, 2)}")
    if has_effect and not negligible and not large:
        parts.append(f"the effect interval {eff_text} straddles ±{fmt(delta, 2)}")
    if has_usage:
        parts.append(f"{use_text} straddles {fmt(thresholds.usage, 2)}")
    if large and not significant:
        parts.append(f"the permutation test is not significant ({p_text})")
    n_needed = _samples_needed(task, thresholds, n_samples, encoded, enc_thr, level)
    informative = eff.get("n_informative")
    inf_needed = None
    if n_needed is not None and informative:
        inf_needed = math.ceil(informative * n_needed / max(n_samples, 1))
    reason = "; ".join(parts) or "the intervals are undefined"
    if n_needed is None:
        reason += "; no audit size would decide it at these estimates"
    else:
        reason += f"; about {n_needed:,} samples"
        if inf_needed is not None:
            reason += (
                f" ({inf_needed:,} of them informative, i.e. with a {name} level that is rare "
                f"in their class; {informative:,} now)"
            )
        reason += " would decide it"
    return Decision(INCONCLUSIVE, reason, n_needed, inf_needed)


def _groups(eff: dict, shown: int = 4) -> str:
    """ " (levels a, b above c, d)" for an effect measured between groups of levels."""
    split = eff.get("split")
    if not split or not split.get("high") or not split.get("low"):
        return ""

    def names(levels: list) -> str:
        more = f" and {len(levels) - shown} more" if len(levels) > shown else ""
        return ", ".join(str(v) for v in levels[:shown]) + more

    return f" (levels {names(split['high'])} above {names(split['low'])})"


def _size_for(value, lo, hi, boundary: float, n: int, level: float = 0.95) -> float:
    """Audit size at which an interval around ``value`` clears ``boundary`` with 80% power."""
    if not _ok(value, lo, hi):
        return math.inf
    half = (hi - lo) / 2
    gap = abs(value - boundary)
    if half <= 0:
        return float(n)
    if gap <= 1e-12:
        return math.inf
    z_ci = NormalDist().inv_cdf(0.5 + level / 2)
    return n * (half * (z_ci + _Z_POWER) / (z_ci * gap)) ** 2


def _samples_needed(task, thresholds, n, encoded, enc_thr, level=0.95) -> int | None:
    enc, use, eff = task["encoding"], task.get("usage") or {}, task.get("effect") or {}
    sizes = [float(n)]
    if not encoded:
        sizes.append(_size_for(enc["value"], enc["ci_low"], enc["ci_high"], enc_thr, n, level))
    # either route decides: the effect against ±delta, or usage against its threshold
    delta = thresholds.effect
    routes = []
    v = eff.get("value")
    if _ok(v):
        boundary = delta if (v >= 0 or eff.get("selection")) else -delta
        routes.append(_size_for(v, eff.get("ci_low"), eff.get("ci_high"), boundary, n, level))
    u = use.get("value")
    # several contrasts: usage decides only "not used" (below the threshold)
    if not use.get("n_contrasts") or (_ok(u) and u < thresholds.usage):
        routes.append(
            _size_for(u, use.get("ci_low"), use.get("ci_high"), thresholds.usage, n, level)
        )
    sizes.append(min(routes))
    need = max(sizes)
    if not math.isfinite(need) or need > _MAX_SAMPLES:
        return None
    return int(math.ceil(max(need, n + 1) / 10.0) * 10)
