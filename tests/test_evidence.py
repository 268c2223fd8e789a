"""Input-side evidence on real images: attributions, ROI masking, interventions.

The digits' stroke pixels are the ROI (derived from the artefact-free images); the
induced "scanner" artefact is a 2x2 patch in the top-left corner, outside it.
"""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import wsca_audit as wa
from wsca_audit.demo.shortcut import PATCH, add_artefact, counterfactual_effect, roi_masks
from wsca_audit.measures.alignment import (
    layer_alignment,
    layer_attributions,
    linear_head,
    output_contrasts,
)


def _roi(split):
    roi = roi_masks(split.clean_x)
    roi[:, PATCH[0], PATCH[1]] = False
    return roi


def _marker(x, on):
    return add_artefact(x, torch.full((len(x),), int(on)))


@pytest.fixture(scope="module")
def evidence(shortcut_model):
    out = {}
    for bias in (0.5, 1.0):
        model, split = shortcut_model(bias)
        x = torch.as_tensor(split.eval_x)
        roi = _roi(split)
        out[bias] = {
            "attr": wa.attribution_mass(
                model,
                x,
                roi,
                n_steps=16,
                targets=split.eval_y,
                metadata={"artefact": split.eval_flags},
                progress=False,
            ),
            "mask": wa.roi_masking(
                model, x, roi, split.eval_y, fill="noise", retained_threshold=0.7, progress=False
            ),
            "effect": wa.intervention_effect(
                model, torch.as_tensor(split.clean_x), _marker, variable="artefact", progress=False
            ),
        }
    return out


@pytest.mark.slow
def test_attribution_mass_leaves_the_roi_for_the_shortcut_model(evidence):
    clean, short = evidence[0.5]["attr"], evidence[1.0]["attr"]
    assert clean["roi_area"] == pytest.approx(short["roi_area"])
    # the shortcut-free model attributes almost everything to the strokes ...
    assert clean["inside"] > 0.9 and clean["ci_low"] > 0.85
    # ... the shortcut model moves mass out, most of all where the artefact is present
    assert short["ci_high"] < clean["ci_low"] - 0.3
    assert short["per_group"]["artefact=1"]["inside"] < 0.2
    assert clean["per_group"]["artefact=1"]["inside"] > 0.8
    assert short["inside"] + short["outside"] == pytest.approx(1.0)


@pytest.mark.slow
def test_masking_shortcut_model_keeps_auc_without_the_roi(evidence):
    clean, short = evidence[0.5]["mask"], evidence[1.0]["mask"]
    assert clean["full"]["value"] > 0.95 and short["full"]["value"] > 0.85
    assert short["verdict"] == "relies_outside_roi"
    # noise inside the strokes still shows their silhouette: the shortcut-free model keeps
    # an above-chance AUC (about 0.63) without the ROI, and the verdict says so
    assert clean["verdict"] == "relies_on_roi_and_outside"
    assert clean["roi_removed"]["retained"]["ci_high"] < 0.7
    assert short["roi_removed"]["retained"]["value"] > clean["roi_removed"]["retained"]["ci_high"]
    assert clean["roi_removed"]["drop"]["ci_low"] > 0.2
    fig = short.figure()
    assert len(fig.axes) == 4


@pytest.mark.slow
def test_intervention_is_the_counterfactual_ground_truth(evidence, shortcut_model):
    clean, short = evidence[0.5]["effect"], evidence[1.0]["effect"]
    assert abs(clean["value"]) < 0.1 and clean["ci_low"] < 0 < clean["ci_high"] + 0.02
    assert short["ci_low"] > 5
    # identical to the benchmark's direct computation
    model, split = shortcut_model(1.0)
    assert short["value"] == pytest.approx(counterfactual_effect(model, split.clean_x), rel=1e-5)


@pytest.mark.slow
def test_evidence_in_the_report_figures_mlflow_names_and_card(evidence, small_result, tmp_path):
    from wsca_audit.tracking import mlflow_payload

    res = wa.AuditResult(small_result.to_dict())
    ev = evidence[1.0]
    res.add_evidence(ev["attr"]).add_evidence(ev["mask"]).add_evidence(ev["effect"])
    rep = res.to_dict()
    assert rep["schema_version"] == 1
    assert set(rep["evidence"]) == {"attribution", "roi_masking", "interventions"}
    assert rep["evidence"]["interventions"]["artefact"]["value"] > 5
    assert rep["evidence"]["roi_masking"]["fill_noise"]["verdict"] == "relies_outside_roi"
    out = res.save(tmp_path / "report")
    figs = sorted(p.relative_to(out).as_posix() for p in (out / "figures").rglob("*.png"))
    assert "figures/evidence/attribution/IntegratedGradients/attribution.png" in figs
    assert "figures/evidence/roi_masking/fill_noise/roi_masking.png" in figs
    assert "figures/evidence/interventions/artefact/intervention.png" in figs
    assert any("overlays/artefact_1" in f for f in figs)
    back = wa.AuditResult.load(out)
    assert back.evidence == json.loads(json.dumps(rep["evidence"]))
    assert "input-side evidence" in back.summary()
    page = (out / "report.html").read_text()
    assert "Input-side evidence" in page
    # captions in words, and the attribution overlays are shown, not only saved
    assert "roi masking &#x27;fill_noise&#x27;: the primary AUC with the ROI" in page
    assert "attribution overlays, artefact_1" in page
    assert "figures/evidence/" not in page.split("Input-side evidence", 1)[1]
    metrics, _, tags = mlflow_payload(back)
    assert metrics["wsca.intervention.artefact.effect"] > 5
    assert "wsca.masking.fill_noise.roi_removed_drop" in metrics
    assert "wsca.attribution.IntegratedGradients.inside_ci_low" in metrics
    assert tags["wsca.masking.fill_noise.verdict"] == "relies_outside_roi"
    card = wa.write_model_card(back, tmp_path / "card" / "MODEL_CARD.md", model_name="digits")
    assert "## Input-side evidence" in card.read_text()


def test_attribution_equals_a_direct_captum_call(shortcut_model):
    from captum.attr import IntegratedGradients, Saliency

    model, split = shortcut_model(1.0)
    x = torch.as_tensor(split.eval_x[:12])
    ours = wa.InputAttribution(model, target=1, n_steps=20, progress=False)
    direct = IntegratedGradients(model).attribute(x, target=1, n_steps=20)
    assert torch.allclose(ours.attribute_batch(x), direct, atol=1e-6)
    # and the summaries are built from exactly those maps
    res = ours.attribute(x, roi=_roi(split)[:12])
    assert np.allclose(res.examples_["all"][0]["map"], direct[0].sum(0).numpy(), atol=1e-6)
    # the default target of a 2-logit model is the log-odds z1 - z0
    score = wa.InputAttribution(model, n_steps=20, progress=False).attribute_batch(x)
    d0 = IntegratedGradients(model).attribute(x, target=0, n_steps=20)
    assert torch.allclose(score, direct - d0, atol=1e-5)
    # any Captum class is accepted, and a configured instance is used as it is
    sal = wa.InputAttribution(model, Saliency, target=1, progress=False).attribute_batch(x)
    assert torch.allclose(sal, Saliency(model).attribute(x, target=1))
    inst = wa.InputAttribution(model, Saliency(model), target=0, progress=False)
    assert torch.allclose(inst.attribute_batch(x), Saliency(model).attribute(x, target=0))


def test_layer_attributions_match_captum_and_closed_form():
    from captum.attr import LayerGradientXActivation

    g = torch.Generator().manual_seed(0)
    W, b = torch.randn(3, 5, generator=g), torch.randn(3, generator=g)
    z = torch.randn(7, 5, generator=g)
    head = linear_head(W, b)
    M = output_contrasts(3)
    a = layer_attributions(head, z, M)
    assert torch.allclose(a, (M @ W)[None] * z[:, None, :], atol=1e-6)
    assert not z.requires_grad  # Captum sets requires_grad on inputs; ours gets an alias
    direct = LayerGradientXActivation(lambda t: head(t) @ M.T, head).attribute(
        z, target=2, attribute_to_layer_input=True
    )
    assert torch.allclose(a[:, 2], direct)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(2, 6),
    st.integers(8, 30),
    st.integers(0, 2**31 - 1),
)
def test_layer_alignment_is_the_diagonal_metric_cosine(n_out, k, d, n, seed):
    """Property: chunked Captum accumulation == closed-form pooled cosine in float64."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n_out, d, generator=g, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    aux = torch.randn(2, k, d, generator=g, dtype=torch.float64)
    w = torch.rand(2, n, generator=g, dtype=torch.float64)
    M = output_contrasts(n_out, torch.float64)
    got = layer_alignment(linear_head(W), M, z, aux, w, chunk=5)
    C = M @ W
    for p in range(2):
        S = (w[p, :, None] * z**2).sum(0)  # weighted diagonal second moment
        for c in range(C.shape[0]):
            for j in range(k):
                num = (C[c] * aux[p, j] * S).sum()
                den = ((C[c] ** 2 * S).sum() * (aux[p, j] ** 2 * S).sum()).sqrt()
                want = float(num / den) if den > 0 else 0.0
                assert got[p, c, j].item() == pytest.approx(want, abs=1e-9)
    assert float(got.abs().max()) <= 1 + 1e-9


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.sampled_from(wa.evidence.masking.FILLS), st.data())
def test_fill_changes_only_the_region(h, w, fill, data):
    x = torch.rand(3, 2, h, w)
    region = torch.tensor(
        data.draw(st.lists(st.booleans(), min_size=3 * h * w, max_size=3 * h * w))
    ).view(3, h, w)
    out = wa.fill_region(x, region, fill, generator=torch.Generator().manual_seed(0))
    keep = ~region[:, None].expand_as(x)
    assert torch.equal(out[keep], x[keep])
    if fill == "zero":
        assert torch.all(out[~keep] == 0)


@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 8), st.integers(0, 8))
def test_boxes_to_roi_area(y0, x0, y1, x1):
    roi = wa.boxes_to_roi([y0, x0, y1, x1], 6, 7)
    assert roi.shape == (6, 7)
    assert roi.sum() == max(0, min(y1, 6) - y0) * max(0, min(x1, 7) - x0)


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)).eval()
    x = torch.rand(10, 1, 4, 4)
    y = np.arange(10) % 2
    roi = np.zeros((4, 4), dtype=bool)
    roi[1:3, 1:3] = True
    return model, x, y, roi


def test_mask_shape_mismatch_is_a_clear_error(tiny):
    model, x, y, _ = tiny
    bad = np.ones((5, 5), dtype=bool)
    with pytest.raises(wa.AuditError, match=r"roi masks are \(5, 5\).*images are \(4, 4\)"):
        wa.roi_masking(model, x, bad, y, progress=False)
    with pytest.raises(wa.AuditError, match=r"\(5, 5\)"):
        wa.attribution_mass(model, x, bad, progress=False)
    with pytest.raises(wa.AuditError, match="3 masks but there are 10 images"):
        wa.attribution_mass(model, x, np.ones((3, 4, 4), dtype=bool), progress=False)
    with pytest.raises(wa.AuditError, match="boolean mask"):
        wa.roi_masking(model, x, np.full((4, 4), 0.5), y, progress=False)


def test_empty_roi_is_a_clear_error(tiny):
    model, x, y, _ = tiny
    masks = np.ones((10, 4, 4), dtype=bool)
    masks[[2, 7]] = False
    with pytest.raises(wa.AuditError, match=r"ROI is empty for 2 image\(s\) \(first: \[2, 7\]\)"):
        wa.attribution_mass(model, x, masks, progress=False)
    with pytest.raises(wa.AuditError, match="ROI is empty for the shared mask"):
        wa.roi_masking(model, x, np.zeros((4, 4), dtype=bool), y, progress=False)


def test_non_image_inputs_are_a_clear_error(tiny):
    model, _, y, roi = tiny
    flat = torch.rand(10, 16)
    with pytest.raises(
        wa.AuditError, match=r"images of shape \(N, C, H, W\); got shape \(10, 16\)"
    ):
        wa.InputAttribution(model, progress=False).attribute(flat, roi=roi)
    with pytest.raises(wa.AuditError, match=r"\(N, C, H, W\)"):
        wa.roi_masking(model, flat, roi, y, progress=False)
    with pytest.raises(wa.AuditError, match="Captum attribution class"):
        wa.InputAttribution(model, method="ig", progress=False).attribute(torch.rand(2, 1, 4, 4))


def test_intervention_that_changes_the_batch_size_is_a_clear_error(tiny):
    model, x, _, _ = tiny
    with pytest.raises(wa.AuditError, match="changed the batch size from 10 to 9"):
        wa.intervention_effect(model, x, lambda t, v: t[1:], progress=False)
    with pytest.raises(wa.AuditError, match=r"intervene\(inputs, 1\) raised KeyError"):
        wa.intervention_effect(model, x, lambda t, v: t if v == 0 else {}["x"], progress=False)
    with pytest.raises(wa.AuditError, match="at least two"):
        wa.intervention_effect(model, x, lambda t, v: t, values=(1,), progress=False)
    with pytest.raises(wa.AuditError, match="constant"):
        wa.intervention_effect(model, torch.zeros(5, 1, 4, 4), lambda t, v: t, progress=False)


def test_other_bad_inputs(tiny):
    model, x, y, roi = tiny
    with pytest.raises(wa.AuditError, match="fill must be one of"):
        wa.roi_masking(model, x, roi, y, fill="inpaint", progress=False)
    with pytest.raises(wa.AuditError, match="single class"):
        wa.roi_masking(model, x, roi, np.zeros(10), progress=False)
    with pytest.raises(wa.AuditError, match="targets has 9 values but there are 10 images"):
        wa.roi_masking(model, x, roi, y[:9], progress=False)
    with pytest.raises(wa.AuditError, match="exactly one of roi"):
        wa.roi_masking(model, x, roi, y, boxes=[0, 0, 2, 2], progress=False)
    multi = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4)).eval()
    with pytest.raises(wa.AuditError, match="target=<index>"):
        wa.intervention_effect(multi, x, lambda t, v: t + v, progress=False)
    with pytest.raises(wa.AuditError, match="takes no"):
        wa.InputAttribution(model, attribute_kwargs={"bogus": 1}, progress=False).attribute(
            x, roi=roi
        )
    with pytest.raises(wa.AuditError, match="add_evidence takes"):
        wa.AuditResult({"schema_version": 1, "tasks": {}}).add_evidence({"inside": 0.5})


def test_iterables_boxes_subsampling_and_groups(tiny):
    model, x, y, _ = tiny
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.as_tensor(y)), batch_size=3
    )
    boxes = [1, 1, 3, 3]
    a = wa.roi_masking(model, loader, boxes=boxes, targets=y, n_bootstrap=20, progress=False)
    b = wa.roi_masking(model, x, wa.boxes_to_roi(boxes, 4, 4), y, n_bootstrap=20, progress=False)
    assert a.to_dict() == b.to_dict()
    site = np.array(list("AAAAABBBBB"))
    res = wa.InputAttribution(model, n_steps=4, max_samples=4, progress=False).attribute(
        x, targets=y, metadata={"site": site}
    )
    assert res["n_samples"] == 4 and res["inside"] is None
    # the stratified subsample covers every (label, site) combination
    assert {k for k in res["per_group"]} == {"all", "label=0", "label=1", "site=A", "site=B"}
    assert all(m.shape == (4, 4) for m in res.mean_maps_.values())


def test_masking_verdict_names_reliance_on_both_the_roi_and_outside():
    """The demo's shortcut model kept AUC 0.64 [0.54, 0.72] without the head region:
    above chance, but under the retained threshold. That is not 'relies_on_roi'."""
    from wsca_audit.evidence.masking import _verdict

    def removed(auc, lo, retained, r_hi):
        return {"value": auc, "ci_low": lo, "retained": {"value": retained, "ci_high": r_hi}}

    assert _verdict(removed(0.64, 0.54, 0.28, 0.45), 0.8) == "relies_on_roi_and_outside"
    assert _verdict(removed(0.42, 0.31, -0.17, 0.02), 0.8) == "relies_on_roi"
    assert _verdict(removed(0.95, 0.90, 0.90, 0.95), 0.8) == "relies_outside_roi"
    assert _verdict(removed(0.55, 0.45, 0.1, 0.6), 0.8) == "inconclusive"


def test_masking_figure_shows_the_chosen_image_with_roi_and_marker_outlined(tiny):
    """The example image was the first one, with neither the ROI nor the marker drawn."""
    model, x, y, roi = tiny
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=3)
    res = wa.roi_masking(
        model, loader, roi, y, example=7, outline={"marker": (0, 0, 1, 1)}, n_bootstrap=10,
        progress=False,
    )  # fmt: skip
    full = x[7, 0].numpy()
    np.testing.assert_allclose(res.examples_["full"], (full - full.min()) / np.ptp(full))
    assert list(res.outlines_) == ["ROI", "marker"]
    np.testing.assert_array_equal(res.outlines_["ROI"], roi)
    assert res.outlines_["marker"].sum() == 1 and res.outlines_["marker"][0, 0]
    fig = res.figure()
    image_axes = fig.axes[:3]
    assert [a.get_title() for a in image_axes] == [
        "full image", "ROI filled (zero)", "outside the ROI filled (zero)"
    ]  # fmt: skip
    assert all(len(a.collections) == 2 for a in image_axes)  # two outlines on each image
    legend = [t.get_text() for t in image_axes[0].get_legend().get_texts()]
    assert legend == ["ROI", "marker"]
    with pytest.raises(wa.AuditError, match="example=10 but the inputs hold 10 images"):
        wa.roi_masking(model, x, roi, y, example=10, progress=False)
    with pytest.raises(wa.AuditError, match="outline 'm' must be an"):
        wa.roi_masking(model, x, roi, y, outline={"m": np.ones((3, 3), bool)}, progress=False)


def test_evidence_types_say_what_they_measure_and_figures_take_the_interval_level(tiny):
    from wsca_audit.evidence import evidence_type
    from wsca_audit.evidence.attribution_figures import shares_figure

    for kind in ("attribution", "roi_masking", "intervention"):
        cls = evidence_type(kind)
        assert cls.title and cls.explanation, kind
    model, x, y, roi = tiny
    effect = wa.intervention_effect(
        model, x, lambda t, v: t + v, ci_level=0.9, n_bootstrap=20, progress=False
    )
    labels = [t.get_text() for t in effect.figure().axes[0].get_legend().get_texts()]
    assert "90% CI" in labels and "95% CI" not in labels
    masking = wa.roi_masking(model, x, roi, y, ci_level=0.8, n_bootstrap=20, progress=False)
    assert masking.figure().axes[-1].get_ylabel() == "AUC (80% CI)"
    mass = wa.attribution_mass(
        model, x, roi, n_steps=4, ci_level=0.9, n_bootstrap=20, progress=False
    )
    assert mass.ci_level == 0.9
    title = shares_figure(mass.to_dict(), "IntegratedGradients", mass.ci_level).get_suptitle()
    assert title.endswith("(90% CI)")
