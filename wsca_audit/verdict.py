"""One verdict type: the names of the four verdicts, their colours, what each means
with the thresholds in force (the legend), and what to do next.

The rule that picks a verdict is :func:`wsca_audit.decision.decide`; everything that
shows a verdict (summary, HTML report, card, MLflow tags, the CLI's gate) reads its
words and colours from here, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .formatting import fmt

USES = "uses"
ENCODED_NOT_USED = "encoded_not_used"
NOT_ENCODED = "not_encoded"
INCONCLUSIVE = "inconclusive"
VERDICTS = (USES, ENCODED_NOT_USED, NOT_ENCODED, INCONCLUSIVE)

COLOURS = {
    USES: "#c0392b",
    ENCODED_NOT_USED: "#2e86c1",
    NOT_ENCODED: "#7f8c8d",
    INCONCLUSIVE: "#e67e22",
}

# one line per verdict, for a reader who has not seen the legend (the HTML's hover text on a verdict)
MEANING = {
    USES: "the model's head USES this variable (beyond what the label explains)",
    ENCODED_NOT_USED: "encoded in the embedding, but the head does not use it",
    NOT_ENCODED: "not readable from the embedding",
    INCONCLUSIVE: "not decided at this sample size (see the intervals)",
}

# the headline's word for a list of variables with the verdict (``uses`` leads it apart)
LIST_LABELS = {
    INCONCLUSIVE: "Undecided",
    ENCODED_NOT_USED: "Encoded, not used",
    NOT_ENCODED: "Not encoded",
}


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds of the verdicts (applied to the bootstrap intervals at ``ci_level``).

    Attributes
    ----------
    usage : float, default=0.25
        ``uses`` needs the usage interval's lower end at or above this (and a
        BH-adjusted permutation p-value at or below ``alpha``);
        ``encoded_not_used`` needs its upper end below it.
    auc : float, default=0.6
        A categorical variable counts as encoded when the held-out AUC interval lies
        at or above this, and as not encoded when it lies below.
    r2 : float, default=0.05
        The same for continuous variables with held-out R².
    alpha : float, default=0.05
        Significance level for the permutation test.
    effect : float, default=0.25
        Equivalence margin of the effect size, in logit-sd units: an effect interval
        inside ``±effect`` decides ``encoded_not_used``; one beyond it (with a
        significant test) decides ``uses`` (see :mod:`wsca_audit.decision`).
    """

    usage: float = 0.25
    auc: float = 0.6
    r2: float = 0.05
    alpha: float = 0.05
    effect: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)


def next_step(name: str, task: dict, evidence: bool = False) -> str:
    """What to do about one task, given its verdict (for the report's and card's *why*).

    Examples
    --------
    >>> next_step("scanner", {"verdict": "inconclusive", "samples_needed": 2400})
    'audit about 2,400 samples (above all samples whose scanner level is rare in their class)'
    """
    verdict = task.get("verdict")
    if verdict == USES:
        check = (
            "the input-side evidence"
            if evidence
            else "the input side (wa.intervention_effect, wa.roi_masking)"
        )
        return (
            f"confirm it on {check}, then remove {name} from the head and audit again: "
            f"wa.mitigate(model, auditor, {name!r}) (docs/mitigation.md)"
        )
    if verdict == INCONCLUSIVE:
        n = task.get("samples_needed")
        if n:
            return (
                f"audit about {int(n):,} samples (above all samples whose {name} level is "
                "rare in their class)"
            )
        return "more samples will not decide it at these estimates: check the input side"
    if verdict == ENCODED_NOT_USED:
        return "none for the head; audit again when the model or the data change"
    if verdict == NOT_ENCODED:
        return "none: no linear shortcut through this layer"
    return "none"


def as_thresholds(thresholds: Thresholds | dict | None) -> Thresholds:
    """The thresholds in force: a :class:`Thresholds`, or one from a report's
    ``settings["thresholds"]`` (entries that are not numbers, as a foreign report may
    hold, keep their defaults).

    Examples
    --------
    >>> as_thresholds({"usage": 0.3, "auc": "high", "other": 1}).usage
    0.3
    >>> as_thresholds(None) == Thresholds()
    True
    """
    if isinstance(thresholds, Thresholds):
        return thresholds
    if not isinstance(thresholds, dict):
        return Thresholds()
    known = {
        k: v
        for k, v in thresholds.items()
        if k in Thresholds.__dataclass_fields__
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }
    return Thresholds(**known)


def with_thresholds(template: str, thresholds: Thresholds | dict | None = None) -> str:
    """A declared explanation with the thresholds in force: ``{usage}`` and ``{effect}``
    become their values (a template with other fields is returned as it is).

    Examples
    --------
    >>> with_thresholds("inside ±{effect} sd", {"effect": 0.3})
    'inside ±0.30 sd'
    """
    t = as_thresholds(thresholds)
    try:
        return template.format_map({"usage": fmt(t.usage, 2), "effect": fmt(t.effect, 2)})
    except (KeyError, IndexError, ValueError):
        return template


def verdict_guide(thresholds: Thresholds | dict | None = None) -> list[tuple[str, str, str]]:
    """(verdict, what it means with the thresholds in force, what to do), for reports and cards.

    Examples
    --------
    >>> [v for v, _, _ in verdict_guide()]
    ['uses', 'encoded_not_used', 'not_encoded', 'inconclusive']
    """
    t = as_thresholds(thresholds)
    d, u, a = fmt(t.effect, 2), fmt(t.usage, 2), fmt(t.alpha, 2)
    return [
        (
            USES,
            f"the head relies on the variable beyond the label: usage at or above {u} or an "
            f"effect beyond ±{d} sd, with a permutation test at p ≤ {a}",
            "treat it as a shortcut: check the input side (interventions, ROI masking), "
            "then remove it from the head with wa.mitigate (erasure or a group-balanced refit) "
            "and audit again",
        ),
        (
            ENCODED_NOT_USED,
            f"the embedding holds the variable, but the head does not use it: its effect "
            f"lies within ±{d} sd, or usage stays below {u}",
            "nothing to fix in the head; keep auditing when the model or the data change",
        ),
        (
            NOT_ENCODED,
            f"a linear head cannot read the variable from the embedding (AUC below "
            f"{fmt(t.auc, 2)} or R² below {fmt(t.r2, 2)})",
            "no linear shortcut through this layer is possible",
        ),
        (
            INCONCLUSIVE,
            "the intervals straddle the thresholds at this audit size",
            "audit more samples (samples_needed says how many), above all samples whose "
            "level is rare in their class",
        ),
    ]
