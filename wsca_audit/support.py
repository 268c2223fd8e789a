"""What the data can tell: whether a task's samples can separate the variable from the label.

Usage and effect hold the label fixed, so they learn only from samples in which the
variable varies within a class. When it hardly does (a site that coincides with the
label, a level seen three times, an age that the class fixes), every interval is narrow
for want of data, not for want of an effect, and a verdict would be confident and
wrong. :func:`support_block` measures this for each task; :func:`insufficient` names
what is missing, and :func:`~wsca_audit.decision.decide` then says ``inconclusive``
before any other rule.

- ``n_informative``: valid samples whose level is not the most common one of their class
  (a continuous variable: valid samples times the share of its variance left within
  classes, its effective count). At least :data:`MIN_INFORMATIVE` are needed.
- ``smallest_level``: the rarest level of a categorical variable and its count. Every
  level needs at least :data:`MIN_LEVEL_COUNT` samples: with fewer, a bootstrap
  resample often lacks the level and the intervals are meaningless (12 samples in 4
  levels gave an effect interval end of -7.6e11 sd).
- ``within_class_share``: the share of a continuous variable's variance left within
  classes; below :data:`MIN_WITHIN_SHARE` the class all but fixes it.

Why these minimums (``benchmarks/informative_minimum.py``: a site that equals the label
but for ``k`` samples, a head that reads the site or does not, 80 seeds at N = 800 and at
N = 300, the minimum switched off, 100 refits): the clean head was called ``uses`` in 10
of 480 audits at ``k`` = 4, 6 or 7 (2.1%), in 1 of 160 at ``k`` = 8, and in none of 640 at
``k`` = 9 to 16; the head that reads the site was never called anything but ``uses`` or
``inconclusive``, and ``uses`` in every audit from ``k`` = 9. :data:`MIN_INFORMATIVE` = 9
is the smallest count without a wrong verdict. On ``benchmarks/validation.py`` (binary
artefacts, audit confounding 0.95 at 300 samples: 8 to 25 informative samples) it makes
7 of the 1,296 audits inconclusive that were decided before (TPR 97% -> 96%; target
95%; docs/method.md gives the figures before and after); a minimum of 10 made 18 so
(TPR 94%).
:data:`MAX_EFFECT_SD` is far above any real effect: the largest shift in that suite is
18 sd (a model that learned the artefact and little else), its largest estimate 19.5 sd;
the interval ends of a degenerate fit lie many orders of magnitude beyond (-7.6e11 sd).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "MAX_EFFECT_SD",
    "MIN_INFORMATIVE",
    "MIN_LEVEL_COUNT",
    "MIN_WITHIN_SHARE",
    "insufficient",
    "permutations_needed",
    "support_block",
]

MIN_INFORMATIVE = 9
MIN_LEVEL_COUNT = 5
MIN_WITHIN_SHARE = 0.01
# an effect interval end beyond this many score sd is a symptom of a degenerate fit
MAX_EFFECT_SD = 1000.0


def support_block(task) -> dict:
    """The task's support (see the module docstring) from its
    :class:`~wsca_audit.taskdata.TaskData`.

    Examples
    --------
    >>> import numpy as np
    >>> from wsca_audit.levels import code_levels
    >>> class T:  # the few TaskData fields this reads
    ...     kind = "categorical"; n_valid = 8; n_informative = 2
    ...     coded = code_levels(np.array([0, 0, 0, 1, 1, 1, 1, 1]), "categorical")
    >>> support_block(T())
    {'n_informative': 2, 'min_informative': 9, 'smallest_level': {'level': '0', 'n': 3}}
    """
    out: dict = {"min_informative": MIN_INFORMATIVE}
    if task.kind == "categorical":
        counts = task.coded.counts
        i = int(counts.argmin())
        out = {
            "n_informative": int(task.n_informative),
            **out,
            "smallest_level": {"level": str(task.coded.labels[i]), "n": int(counts[i])},
        }
        return out
    share = _within_share(task)
    return {
        "n_informative": math.floor(task.n_valid * share),
        **out,
        "within_class_share": round(share, 6),
    }


def _within_share(task) -> float:
    """Share of a continuous variable's variance left within the label's classes."""
    x = task.target_std[task.valid].double()
    total = float(((x - x.mean()) ** 2).sum())
    if total <= 0:
        return 0.0
    within = task.center(task.target_std[:, None])[:, 0][task.valid].double()
    return float(torch.clamp((within**2).sum() / total, 0.0, 1.0))


def permutations_needed(n_tested: int, alpha: float) -> int:
    """The fewest permutations with which a variable that alone stands out can reach
    ``alpha`` after BH over ``n_tested`` variables: ``m / (B + 1) <= alpha``.

    Examples
    --------
    >>> permutations_needed(2, 0.05)
    39
    """
    return math.ceil(max(n_tested, 1) / alpha) - 1


def insufficient(name: str, support: dict | None) -> tuple[str, int | None] | None:
    """Why the data cannot decide the task (a sentence, and the informative samples
    needed where more of them would help), or None when they can.

    Examples
    --------
    >>> insufficient("site", {"n_informative": 0, "min_informative": 9})[0]
    'site coincides with the label in these data: no sample separates them'
    >>> insufficient("site", {"n_informative": 50, "smallest_level": {"level": "b", "n": 3}})[0]
    "too few samples in level 'b' of site (3; at least 5 per level)"
    """
    if not support:
        return None
    level = support.get("smallest_level")
    if level and level["n"] < MIN_LEVEL_COUNT:
        return (
            f"too few samples in level {level['level']!r} of {name} ({level['n']}; at least "
            f"{MIN_LEVEL_COUNT} per level)",
            None,
        )
    share = support.get("within_class_share")
    if share is not None and share < MIN_WITHIN_SHARE:
        return (
            f"{name} is all but fixed by the label in these data ({share:.1%} of its variance "
            f"lies within classes, under {MIN_WITHIN_SHARE:.0%})",
            None,
        )
    n_inf = support.get("n_informative")
    if n_inf is None or n_inf >= MIN_INFORMATIVE:
        return None
    if n_inf == 0:
        return f"{name} coincides with the label in these data: no sample separates them", (
            MIN_INFORMATIVE
        )
    return (
        f"only {n_inf} sample(s) separate {name} from the label (a level that is rare in "
        f"their class); at least {MIN_INFORMATIVE} are needed",
        MIN_INFORMATIVE,
    )
