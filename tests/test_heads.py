"""The batched solver against scikit-learn's LogisticRegression / Ridge (the reference)."""

import numpy as np
import pytest
import torch
from conftest import cosine
from sklearn.linear_model import LogisticRegression, Ridge

from wsca_audit import AuditError, BatchedLinearHead


@pytest.fixture(scope="module")
def weights(digits_std):
    n = len(digits_std[1])
    rng = np.random.default_rng(0)
    w = rng.multinomial(n, np.ones(n) / n, size=3).astype(float)  # bootstrap counts
    w[2, : n // 3] = 0.0  # a fold mask
    return w


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_binary_matches_sklearn(digits_std, weights, C):
    X, y = digits_std
    yb = (y >= 5).astype(int)
    targets = torch.tensor(np.stack([yb, yb, yb]))
    head = BatchedLinearHead("binary", reg=1 / C).fit(
        torch.tensor(X, dtype=torch.float32), targets, torch.tensor(weights)
    )
    for i in range(3):
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(
            X, yb, sample_weight=weights[i]
        )
        assert cosine(ref.coef_, head.coef_[i].numpy()) >= 0.999
        assert head.intercept_[i, 0].item() == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_multinomial_matches_sklearn(digits_std, weights):
    X, y = digits_std
    targets = torch.tensor(np.stack([y, y]))
    head = BatchedLinearHead("multinomial", reg=1.0, n_classes=10).fit(
        torch.tensor(X, dtype=torch.float32), targets, torch.tensor(weights[:2])
    )
    for i in range(2):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=20000).fit(
            X, y, sample_weight=weights[i]
        )
        assert head.coef_[i].shape == ref.coef_.shape
        assert cosine(ref.coef_, head.coef_[i].numpy()) >= 0.999
        for k in range(10):  # every class vector, not only the whole matrix
            assert cosine(ref.coef_[k], head.coef_[i, k].numpy()) >= 0.999


def test_ridge_matches_sklearn(digits_std, weights):
    X, y = digits_std
    t = y + np.random.default_rng(1).normal(size=len(y))
    head = BatchedLinearHead("squared", reg=3.0).fit(
        torch.tensor(X, dtype=torch.float32), torch.tensor(np.stack([t] * 3)), torch.tensor(weights)
    )
    for i in range(3):
        ref = Ridge(alpha=3.0).fit(X, t, sample_weight=weights[i])
        assert cosine(ref.coef_, head.coef_[i].numpy()) >= 0.999
        assert head.intercept_[i, 0].item() == pytest.approx(ref.intercept_, abs=1e-3)


def test_permuted_targets_and_warm_start_agree_with_cold(digits_std):
    X, y = digits_std
    Xt = torch.tensor(X, dtype=torch.float32)
    yb = torch.tensor((y >= 5).astype(int))
    g = torch.Generator().manual_seed(0)
    targets = torch.stack([yb, yb[torch.randperm(len(yb), generator=g)]])
    cold = BatchedLinearHead("binary").fit(Xt, targets, groups=torch.tensor([0, 1]))
    warm = BatchedLinearHead("binary").fit(Xt, targets, init=(cold.coef_ * 0.9, cold.intercept_))
    assert cosine(cold.coef_.numpy(), warm.coef_.numpy()) >= 0.99999
    assert warm.n_iter_ <= cold.n_iter_
    # each problem equals its own single fit: batching changes nothing
    single = BatchedLinearHead("binary").fit(Xt, targets[1:])
    assert cosine(single.coef_.numpy(), cold.coef_[1:].numpy()) >= 0.99999


def test_bad_arguments():
    X = torch.randn(10, 3)
    with pytest.raises(AuditError, match="loss"):
        BatchedLinearHead("hinge").fit(X, torch.zeros(1, 10))
    with pytest.raises(AuditError, match="reg"):
        BatchedLinearHead("binary", reg=0).fit(X, torch.zeros(1, 10))
    with pytest.raises(AuditError, match="samples"):
        BatchedLinearHead("binary").fit(X, torch.zeros(1, 9))


def test_multinomial_class_sums_stay_zero_with_many_problems():
    """Bug: the per-class preconditioner let CG drift along the softmax's shift direction
    (curvature = penalty only), leaving class-sums of ~1e-2 and cosine 0.9987 vs sklearn
    at N=20000; it also slowed CG. The solution has zero class-sums exactly."""
    g = np.random.default_rng(0)
    n, d = 6000, 96
    latent = g.normal(size=(n, 4))
    X = (latent @ g.normal(size=(4, d)) / 4 + g.normal(size=(n, d))).astype(np.float32)
    y = (latent + g.normal(size=(n, 4))).argmax(1)
    perms = [y[g.permutation(n)] for _ in range(3)]
    T = torch.tensor(np.stack([y, *perms]))
    head = BatchedLinearHead("multinomial", reg=1.0, n_classes=4).fit(
        torch.tensor(X), T, groups=torch.tensor([0, 1, 1, 1])
    )
    sums = head.coef_.sum(1).abs().max().item()
    assert sums < 1e-5 * head.coef_.abs().max().item()
    for i, t in enumerate([y, *perms]):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=20000).fit(X, t)
        assert cosine(ref.coef_, head.coef_[i].numpy()) >= 0.99999


@pytest.mark.parametrize("loss", ["binary", "multinomial", "squared"])
def test_a_regularisation_path_in_one_batch_equals_separate_fits(digits_std, loss):
    X, y = digits_std
    X = torch.as_tensor(X[:300, :20], dtype=torch.float64)
    t = torch.as_tensor(y[:300] % (2 if loss == "binary" else 3))
    if loss == "squared":
        t = X[:, 0] + 0.1 * torch.as_tensor(y[:300], dtype=torch.float64)
    n_classes = 3 if loss == "multinomial" else None
    regs = [0.01, 1.0, 100.0]
    targets = t[None].expand(6, -1)
    weights = torch.ones(6, 300, dtype=torch.float64)
    weights[3:, ::2] = 0.0  # two sample weightings x three penalties
    path = BatchedLinearHead(loss, reg=regs * 2, n_classes=n_classes, tol=1e-9).fit(
        X, targets, weights
    )
    for i in range(6):
        one = BatchedLinearHead(loss, reg=regs[i % 3], n_classes=n_classes, tol=1e-9).fit(
            X, targets[i : i + 1], weights[i : i + 1]
        )
        torch.testing.assert_close(path.coef_[i], one.coef_[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(path.intercept_[i], one.intercept_[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(AuditError, match="reg has 2 values for 6 problems"):
        BatchedLinearHead(loss, reg=[1.0, 2.0], n_classes=n_classes).fit(X, targets, weights)


def test_kronecker_preconditioner_reaches_the_full_factor_solution(digits_std, monkeypatch):
    """From 8 classes on, the softmax preconditioner is Kronecker-factored (the full
    K(D+1)-square factor made a 30-level audit slower than a scikit-learn loop); the
    solution is the same, only the path to it changes."""
    from wsca_audit import heads

    X, y = digits_std
    X = torch.as_tensor(X[:600, :24], dtype=torch.float64)
    t = torch.as_tensor(y[:600])[None].expand(3, -1).clone()
    t[1:] = t[1:, torch.randperm(600, generator=torch.Generator().manual_seed(0))]
    fits = {}
    for name, threshold in (("kron", 8), ("full", 10**9)):
        monkeypatch.setattr(heads, "KRON_MIN_CLASSES", threshold)
        fits[name] = BatchedLinearHead("multinomial", n_classes=10, tol=1e-9).fit(X, t)
    torch.testing.assert_close(fits["kron"].coef_, fits["full"].coef_, rtol=1e-5, atol=1e-5)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=20000).fit(X.numpy(), t[0].numpy())
    assert cosine(ref.coef_ - ref.coef_.mean(0), fits["kron"].coef_[0].numpy()) >= 0.999
