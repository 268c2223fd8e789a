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

from .formatting import ci_text, fmt, percent
from .support import MAX_EFFECT_SD, insufficient, permutations_needed
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
    name: str,
    task: dict,
    thresholds: Thresholds,
    n_samples: int,
    level: float = 0.95,
    *,
    n_permutations: int | None = None,
    n_tested: int = 1,
) -> Decision:
    """Apply the rules of this module to one task block of a report.

    Parameters
    ----------
    name : str
        The metadata variable (used in the sentence).
    task : dict
        The task's report block (``encoding``, ``usage``, optionally ``effect`` and
        ``support``).
    thresholds : Thresholds
    n_samples : int
        Valid samples of the task (the size ``samples_needed`` scales).
    level : float, default=0.95
        The level of the report's intervals (``ci_level``), for ``samples_needed``.
    n_permutations : int, optional
        The permutations behind the p-value, and ``n_tested`` the variables BH adjusted
        over: when the smallest p they allow stands in the way, the reason says so and
        names ``n_permutations``, not the audit size.

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
    lacking = insufficient(name, task.get("support"))
    if lacking is not None:  # no interval means anything: say what the data lack
        return Decision(INCONCLUSIVE, lacking[0], None, lacking[1])
    f = _Facts.of(task, thresholds, n_permutations, n_tested)
    if f.enc_problem:
        return Decision(INCONCLUSIVE, f"the encoding of {name} {f.enc_problem}")
    if f.enc_hi < f.enc_thr:
        return Decision(
            NOT_ENCODED,
            f"{name} is not readable from the embedding: encoding {f.enc_text} is below "
            f"{fmt(f.enc_thr, 2)}",
        )
    delta = thresholds.effect
    if f.encoded and f.negligible:
        return Decision(
            ENCODED_NOT_USED,
            f"{name} is encoded ({f.enc_text}) but moves the score by {f.eff_text}, "
            f"within ±{fmt(delta, 2)} sd",
        )
    if f.encoded and f.significant and f.usage_above and f.one_contrast:
        extra = f"; it moves the score by {f.eff_text}" if f.has_effect else ""
        return Decision(
            USES,
            f"{f.use_text} is above {fmt(thresholds.usage, 2)} and {f.p_text}{extra}",
        )
    if f.encoded and f.significant and f.large:
        return Decision(
            USES,
            f"{name} moves the score by {f.eff_text}, beyond ±{fmt(delta, 2)} sd, and "
            f"{f.p_text} ({f.use_text})",
        )
    if f.encoded and f.has_usage and f.u_hi < thresholds.usage:
        return Decision(
            ENCODED_NOT_USED,
            f"{name} is encoded ({f.enc_text}) but {f.use_text} is below "
            f"{fmt(thresholds.usage, 2)}",
        )
    return _inconclusive(name, task, f, thresholds, n_samples, level)


@dataclass(frozen=True)
class _Facts:
    """What the rules read off a task block: intervals that can carry a verdict (finite,
    of positive width, within ±MAX_EFFECT_SD for the effect) and the texts that cite them."""

    enc_thr: float
    enc_text: str
    enc_lo: float | None
    enc_hi: float | None
    enc_problem: str | None
    encoded: bool
    has_effect: bool
    negligible: bool
    large: bool
    eff_text: str
    eff_problem: str | None
    has_usage: bool
    u_lo: float | None
    u_hi: float | None
    usage_above: bool
    use_text: str
    one_contrast: bool
    significant: bool
    p_text: str
    p_floor: str | None

    @classmethod
    def of(cls, task: dict, th: Thresholds, n_perm: int | None, n_tested: int) -> _Facts:
        enc, use = task.get("encoding") or {}, task.get("usage") or {}
        eff = task.get("effect") or {}
        metric = enc.get("metric", "auc")
        enc_thr = th.auc if metric == "auc" else th.r2
        enc_text = f"{metric.upper() if metric == 'auc' else 'R²'} {ci_text(enc)}"
        enc_lo, enc_hi = enc.get("ci_low"), enc.get("ci_high")
        enc_problem = _interval_problem(enc, enc_text, ends=(0.0, 1.0))
        e_lo, e_hi = eff.get("ci_low"), eff.get("ci_high")
        eff_problem = None
        if eff.get("note"):  # hidden by the analysis (an end beyond ±MAX_EFFECT_SD)
            eff_problem = f"was {eff['note']}"
        elif eff:
            eff_problem = _interval_problem(eff, f"{ci_text(eff, 2)} sd", MAX_EFFECT_SD)
        has_effect = bool(eff) and eff_problem is None
        delta = th.effect
        # a cross-fitted size is oriented by the half that chose it: below 0 the halves
        # disagree, which is noise, not a large effect the other way
        oriented = bool(eff.get("selection"))
        u_lo, u_hi, p = use.get("ci_low"), use.get("ci_high"), use.get("p_value")
        has_usage = bool(use) and _interval_problem(use, "", ends=(0.0, 1.0)) is None
        return cls(
            enc_thr=enc_thr, enc_text=enc_text, enc_lo=enc_lo, enc_hi=enc_hi,
            enc_problem=enc_problem, encoded=enc_problem is None and enc_lo >= enc_thr,
            has_effect=has_effect,
            negligible=has_effect and -delta < e_lo and e_hi < delta,
            large=has_effect and (e_lo >= delta or (e_hi <= -delta and not oriented)),
            eff_text=f"{ci_text(eff, 2)}{_target_units(eff)}{_groups(eff)}" if has_effect else "",
            eff_problem=eff_problem,
            has_usage=has_usage, u_lo=u_lo, u_hi=u_hi,
            usage_above=has_usage and u_lo >= th.usage,
            use_text=f"usage {ci_text(use)}",
            one_contrast=not use.get("n_contrasts"),
            significant=_ok(p) and p <= th.alpha,
            p_text=f"p = {fmt(p, 3)}" if _ok(p) else "no permutation test",
            p_floor=_p_floor(use, th.alpha, n_perm, n_tested),
        )  # fmt: skip


def _target_units(eff: dict) -> str:
    """The effect's unit in the sentence: sd, or a regression head's residual sd followed
    by the effect in the target's units."""
    tu = eff.get("target_units") or {}
    if not _ok(tu.get("value"), tu.get("ci_low"), tu.get("ci_high")):
        return " sd"
    unit = tu.get("unit") or "in the target's units"
    return f" residual sd ({ci_text(tu, 2)} {unit} with the target held fixed)"


def _interval_problem(
    block: dict, text: str, bound: float | None = None, ends: tuple = ()
) -> str | None:
    """Why an interval cannot carry a verdict (None when it can): missing, absurdly wide
    (an end beyond ``±bound``), or of zero width away from the measure's own ``ends``
    (an AUC of 1 [1, 1] is a fact; 0.5 [0.5, 0.5] means the resamples do not vary)."""
    if not block:
        return "is missing"
    lo, hi, v = block.get("ci_low"), block.get("ci_high"), block.get("value")
    if not _ok(lo, hi):
        return f"has no interval ({text}): run with n_bootstrap > 0"
    if bound is not None and max(abs(lo), abs(hi), abs(v) if _ok(v) else 0.0) > bound:
        return f"has an interval end beyond ±{fmt(bound, 0)} sd: too few samples to size it"
    at_end = any(abs(lo - e) <= 1e-9 and abs(hi - e) <= 1e-9 for e in ends)
    if hi - lo <= 1e-9 * (1.0 + abs(hi)) and not at_end:
        return f"has an interval of zero width ({text}): its resamples do not vary"
    return None


def _p_floor(use: dict, alpha: float, n_perm: int | None, n_tested: int) -> str | None:
    """Why the permutation test cannot reach ``alpha`` at these settings, or None.

    With ``B`` permutations the smallest p is ``1 / (B + 1)``; BH over ``m`` variables
    then gives a variable that alone stands out at least ``m / (B + 1)``."""
    if n_perm is None:
        return None
    need = permutations_needed(n_tested, alpha)
    if n_perm == 0 or use.get("p_value") is None:
        return f"no permutation test was run (n_permutations=0); run with n_permutations={need} or more"
    floor = 1.0 / (n_perm + 1)
    raw = use.get("p_value_raw", use.get("p_value"))
    at_floor = _ok(raw) and raw <= floor * (1 + 1e-5)  # p is stored in float32
    if at_floor and use["p_value"] > alpha:
        return (
            f"the permutation test is at its floor (p = {fmt(use['p_value'], 3)} after BH over "
            f"{n_tested} variable(s) with n_permutations={n_perm}, above alpha "
            f"{fmt(alpha, 2)}): more permutations would decide it, not more samples; run "
            f"with n_permutations={need} or more"
        )
    return None


def _inconclusive(name, task, f: _Facts, thresholds, n_samples, level) -> Decision:
    """What straddles (or what else stands in the way), and the size that would decide."""
    delta = thresholds.effect
    parts = []
    if not f.encoded:
        parts.append(f"encoding {f.enc_text} straddles {fmt(f.enc_thr, 2)}")
    if f.eff_problem:
        parts.append(f"the effect {f.eff_problem}")
    elif f.has_effect and not f.negligible and not f.large:
        parts.append(f"the effect interval {f.eff_text} straddles ±{fmt(delta, 2)}")
    if f.has_usage and f.u_lo < thresholds.usage <= f.u_hi:
        parts.append(f"{f.use_text} straddles {fmt(thresholds.usage, 2)}")
    elif f.has_usage and f.usage_above and not f.one_contrast and not f.large:
        parts.append(
            f"{f.use_text} is above {fmt(thresholds.usage, 2)}, which alone does not decide "
            "for a head of three or more classes"
        )
    ready = f.encoded and (f.large or (f.usage_above and f.one_contrast))
    if ready and not f.significant:
        if f.usage_above and f.one_contrast:
            shown = f"{f.use_text} is above {fmt(thresholds.usage, 2)}"
        else:
            shown = f"the effect {f.eff_text} is beyond ±{fmt(delta, 2)}"
        if f.p_floor:
            parts.append(f"{shown}, but {f.p_floor}")
            return Decision(INCONCLUSIVE, "; ".join(parts))
        parts.append(f"{shown}, but the permutation test is not significant ({f.p_text})")
    n_needed = _samples_needed(task, thresholds, n_samples, f.encoded, f.enc_thr, level)
    informative = (task.get("effect") or {}).get("n_informative")
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


def decide_outputs(
    name: str,
    task: dict,
    thresholds: Thresholds,
    decision: Decision,
    *,
    n_permutations: int | None = None,
    n_tested: int = 1,
) -> tuple[Decision, dict | None]:
    """Each output's verdict (heads of several outputs), and the task's verdict as their
    summary.

    An output's effect interval is simultaneous over the outputs (``effect.by_output``, a
    band that covers every output at once) and must be able to carry a verdict (finite,
    of positive width, within ±MAX_EFFECT_SD; a cross-fitted size below 0 is noise):
    beyond ``±effect`` with the task encoded and its permutation test significant, the
    output ``uses`` the variable; within ``±effect``, ``encoded_not_used``; else
    ``inconclusive``. The task is ``uses`` when any output is (the reason names them),
    and ``encoded_not_used`` when every output's interval lies within ``±effect`` (the
    simultaneous intervals cover all outputs at once); otherwise ``decision`` stands.
    Returns the task's decision and ``{output: {"effect", "usage", "verdict", "reason"}}``
    (None for a head of one output).
    """
    block = (task.get("effect") or {}).get("by_output") or {}
    per = block.get("outputs")
    if not per or decision.verdict == NOT_ENCODED or insufficient(name, task.get("support")):
        return decision, None
    f = _Facts.of(task, thresholds, n_permutations, n_tested)
    delta = thresholds.effect
    oriented = bool(block.get("selection"))  # cross-fitted: below 0 the halves disagree
    usage_rows = _usage_rows(task)
    outputs: dict[str, dict] = {}
    for out_name, eff in per.items():
        text = f"{name} moves {out_name} by {ci_text(eff, 2)} sd"
        lo, hi = eff.get("ci_low"), eff.get("ci_high")
        problem = _interval_problem(eff, f"{ci_text(eff, 2)} sd", MAX_EFFECT_SD)
        if problem:
            verdict, reason = INCONCLUSIVE, f"the effect on {out_name} {problem}"
        elif not f.encoded:
            verdict, reason = INCONCLUSIVE, f"{text}; the encoding does not decide"
        elif lo >= delta or (hi <= -delta and not oriented):
            verdict = USES if f.significant else INCONCLUSIVE
            reason = f"{text}, beyond ±{fmt(delta, 2)} sd" + (
                "" if f.significant else f", but {f.p_text}"
            )
        elif -delta < lo and hi < delta:
            verdict, reason = ENCODED_NOT_USED, f"{text}, within ±{fmt(delta, 2)} sd"
        else:
            verdict, reason = INCONCLUSIVE, f"{text}, which straddles ±{fmt(delta, 2)} sd"
        outputs[out_name] = {"effect": eff, "verdict": verdict, "reason": reason}
        if out_name in usage_rows:
            outputs[out_name]["usage"] = usage_rows[out_name]
    level = percent(block.get("level", 0.95))  # the family's: the band covers all at once
    using = [o for o, b in outputs.items() if b["verdict"] == USES]
    if using and decision.verdict != USES:
        shown = ", ".join(f"{o} ({ci_text(outputs[o]['effect'], 2)} sd)" for o in using[:4])
        more = f" and {len(using) - 4} more" if len(using) > 4 else ""
        return Decision(
            USES,
            f"{name} moves output(s) {shown}{more} beyond ±{fmt(delta, 2)} sd ({level} "
            f"intervals simultaneous over {len(outputs)} outputs) and {f.p_text}",
        ), outputs
    if using:
        names = ", ".join(using[:6]) + (f" and {len(using) - 6} more" if len(using) > 6 else "")
        return Decision(USES, f"{decision.reason}; output(s) that use it: {names}"), outputs
    if decision.verdict == INCONCLUSIVE and all(
        b["verdict"] == ENCODED_NOT_USED for b in outputs.values()
    ):
        return Decision(
            ENCODED_NOT_USED,
            f"{name} is encoded ({f.enc_text}) but moves none of the {len(outputs)} outputs "
            f"beyond ±{fmt(delta, 2)} sd ({level} intervals simultaneous over the outputs, the "
            f"widest {_widest(outputs)})",
        ), outputs
    return decision, outputs


def _usage_rows(task: dict) -> dict[str, dict]:
    """Each output's usage: with its interval where the usage measure gives one
    (``usage.by_output``), else the point fit's largest per-level correlation."""
    given = (task.get("usage") or {}).get("by_output")
    if given:
        return dict(given)
    per = (task.get("per_class") or {}).get("usage") or {}
    rows, values = per.get("rows"), per.get("matrix")
    if not rows or not values:
        return {}
    return {r: {"value": max(abs(v) for v in row)} for r, row in zip(rows, values) if row}


def _widest(outputs: dict) -> str:
    name, b = max(
        outputs.items(),
        key=lambda kv: max(abs(kv[1]["effect"]["ci_low"]), abs(kv[1]["effect"]["ci_high"])),
    )
    return f"{name}: {ci_text(b['effect'], 2)} sd"
