"""End to end on real images: a CNN trained with an induced, label-correlated artefact.

Audit data carry the artefact at 0.8 correlation with the label (confounded), which is
where the paper's raw cosine and a naive correlation mislead.
"""

import numpy as np
import pytest
import torch

import wsca_audit as wa
from wsca_audit.demo.shortcut import counterfactual_effect

BIASES = (0.5, 0.8, 0.9, 1.0)


def _audit(model, split, targets=True, **kw):
    auditor = wa.Auditor(model, kinds={"artefact": "categorical", "ink": "continuous"})
    ink = split.clean_x.reshape(len(split.clean_x), -1).sum(1)
    with auditor.collect(), torch.no_grad():
        for i in range(0, len(split.eval_x), 128):  # a real batched evaluation loop
            sl = slice(i, i + 128)
            model(torch.as_tensor(split.eval_x[sl]))
            auditor.record(
                targets=split.eval_y[sl] if targets else None,
                metadata={"artefact": split.eval_flags[sl], "ink": ink[sl]},
            )
    return auditor.analyze(progress=False, **kw)


@pytest.fixture(scope="module")
def audits(shortcut_model):
    out = {}
    for bias in BIASES:
        model, split = shortcut_model(bias)
        out[bias] = (model, split, _audit(model, split, n_bootstrap=100, n_permutations=100))
    return out


@pytest.mark.slow
def test_usage_tracks_the_induced_shortcut(audits):
    usage = [audits[b][2].tasks["artefact"]["usage"]["value"] for b in BIASES]
    assert all(a < b for a, b in zip(usage, usage[1:])), usage
    thr = wa.Thresholds().usage
    free = audits[0.5][2].tasks["artefact"]
    assert free["usage"]["value"] < thr
    assert free["verdict"] != "uses"
    assert free["encoding"]["value"] > 0.8  # the artefact IS encoded, just not used
    for b in (0.9, 1.0):
        assert audits[b][2].tasks["artefact"]["verdict"] == "uses", b
    # ground truth: the counterfactual effect of the artefact rises with the bias too
    effects = [counterfactual_effect(audits[b][0], audits[b][1].clean_x) for b in BIASES]
    assert all(a < b for a, b in zip(effects, effects[1:])), effects
    # the Captum layer view agrees: attribution alignment rises with the bias as well
    align = [audits[b][2].tasks["artefact"]["attribution"]["value"] for b in BIASES]
    assert all(a < b for a, b in zip(align, align[1:])), align
    # ink is a real property of the digits the model was not trained to read
    assert all(audits[b][2].tasks["ink"]["verdict"] != "uses" for b in BIASES)


@pytest.mark.slow
def test_the_two_pitfalls_of_the_raw_measures(audits):
    # 1. weights are not patterns: at bias 0.9 the paper's cosine stays small
    art = audits[0.9][2].tasks["artefact"]
    assert art["wsc"]["value"] < 0.3 < art["usage"]["value"]
    # 2. confounding: without removing the label, the shortcut-free model looks aligned
    model, split, _ = audits[0.5]
    naive = _audit(model, split, targets=False, n_bootstrap=0, n_permutations=0)
    assert naive.tasks["artefact"]["usage"]["value"] > 0.6
    assert any("not deconfounded" in w for w in naive.warnings)


@pytest.mark.slow
def test_report_files_of_a_real_audit(audits, tmp_path):
    res = audits[0.9][2]
    out = res.save(tmp_path)
    back = wa.AuditResult.load(out)
    assert back.verdicts == res.verdicts
    assert back["layer"] == "head"
    assert back["primary"]["metric"]["value"] > 0.95
    assert np.isfinite(back.tasks["artefact"]["usage"]["p_value"])
