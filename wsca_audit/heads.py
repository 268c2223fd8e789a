"""Batched auxiliary-head fitting (the model's own head is :mod:`wsca_audit.primary`).

Every auxiliary head is an L2-regularised linear model on one shared design matrix.
A bootstrap resample is a vector of sample weights, a permutation refit is a permuted
target vector and a cross-fitting fold is a 0/1 weight vector, so all of them are
solved together: one batched Newton solve in torch, with conjugate-gradient steps
preconditioned by a Cholesky factor of the group-average Hessian. The matrix products
are BLAS-3 (``N x D`` times ``D x problems``), which is what makes the batch fast on a
CPU and on CUDA alike.

Objectives (per problem, with sample weights ``s``; they match scikit-learn's):

* ``"binary"``      ``sum_i s_i log(1 + exp(-y_i eta_i)) + ||w||^2 / (2 C)``, like
  ``LogisticRegression(C=C)`` on two classes (one coefficient vector);
* ``"multinomial"`` ``sum_i s_i CE(softmax(eta_i), y_i) + ||W||^2 / (2 C)``, like
  ``LogisticRegression(C=C)`` on three or more classes;
* ``"squared"``     ``sum_i s_i (y_i - eta_i)^2 + alpha ||w||^2`` (halved), like
  ``Ridge(alpha=alpha)``.

Intercepts are never penalised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import AuditError
from .shards import Shard, total

LOSSES = ("squared", "binary", "multinomial")


# --------------------------------------------------------------------------- batched GLM
class BatchedLinearHead:
    """Many L2-regularised linear heads on one design matrix, fitted in one batched solve.

    Parameters
    ----------
    loss : {"binary", "multinomial", "squared"}
        Logistic regression (two classes), softmax regression, or ridge regression.
    reg : float or array-like of shape (n_problems,), default=1.0
        ``1 / C`` for the logistic losses (scikit-learn's ``C``), ``alpha`` for ridge;
        one value per problem fits a regularisation path in the same batch.
    n_classes : int, optional
        Number of classes for ``"multinomial"``.
    tol : float, default=1e-6
        Stop when the largest gradient entry is below ``tol`` times the problem's total
        sample weight.
    max_iter : int, default=100
        Newton iterations.
    max_cg : int, default=100
        Conjugate-gradient iterations per Newton step.

    Attributes
    ----------
    coef_ : torch.Tensor of shape (n_problems, n_outputs, n_features)
    intercept_ : torch.Tensor of shape (n_problems, n_outputs)
    n_iter_ : int
        Newton iterations taken by the slowest problem.

    Examples
    --------
    >>> import torch
    >>> X = torch.randn(200, 5)
    >>> y = (X[:, 0] > 0).long()
    >>> targets = torch.stack([y, y[torch.randperm(200)]])        # a fit and a null refit
    >>> head = BatchedLinearHead("binary", reg=1.0).fit(X, targets)
    >>> head.coef_.shape
    torch.Size([2, 1, 5])
    """

    def __init__(
        self,
        loss: str,
        reg: float = 1.0,
        n_classes: int | None = None,
        tol: float = 1e-6,
        max_iter: int = 100,
        max_cg: int = 100,
    ) -> None:
        self.loss = loss
        self.reg = reg
        self.n_classes = n_classes
        self.tol = tol
        self.max_iter = max_iter
        self.max_cg = max_cg
        self._shard: Shard | None = None

    # -- public ---------------------------------------------------------------------
    def fit(
        self,
        X: Tensor,
        targets: Tensor,
        sample_weight: Tensor | None = None,
        *,
        groups: Tensor | None = None,
        init: tuple[Tensor, Tensor] | None = None,
        shard: Shard | None = None,
    ) -> BatchedLinearHead:
        """Fit one head per row of ``targets``.

        Parameters
        ----------
        X : Tensor of shape (n_samples, n_features)
            Shared design matrix (already standardised by the caller).
        targets : Tensor of shape (n_problems, n_samples)
            Class indices (logistic losses) or values (ridge).
        sample_weight : Tensor of shape (n_problems, n_samples), optional
            Non-negative weights: bootstrap counts, fold masks, missing-value masks.
        groups : Tensor of shape (n_problems,), optional
            Problems whose solutions are alike (e.g. bootstrap refits vs permutation
            refits) share a preconditioner.
        init : (coef, intercept), optional
            Warm start, shapes as ``coef_`` and ``intercept_``.
        shard : Shard, optional
            ``X``, ``targets`` and ``sample_weight`` hold this rank's samples: every sum
            over samples (loss, gradient, Hessian products, preconditioner) is summed
            over the ranks, so every rank takes the same steps to the same heads.
        """
        if self.loss not in LOSSES:
            raise AuditError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        n, d = X.shape
        targets = targets.to(X.device)
        n_problems = targets.shape[0]
        if targets.shape[1] != n:
            raise AuditError(f"targets have {targets.shape[1]} samples, X has {n}")
        reg = torch.as_tensor(self.reg, dtype=torch.float64).flatten()
        if reg.numel() not in (1, n_problems):
            raise AuditError(f"reg has {reg.numel()} values for {n_problems} problems")
        if not bool((reg > 0).all()):
            raise AuditError("reg must be > 0 (the L2 penalty keeps every head unique)")
        reg = reg.expand(n_problems)
        if sample_weight is None:
            sample_weight = torch.ones(n_problems, n, dtype=X.dtype, device=X.device)
        S = sample_weight.to(device=X.device, dtype=X.dtype).T.contiguous()  # (N, P)
        if self.loss == "multinomial":
            if not self.n_classes or self.n_classes < 3:
                raise AuditError("multinomial loss needs n_classes >= 3")
            k = self.n_classes
            T = targets.long().T.contiguous()  # (N, P)
        else:
            k = 1
            T = targets.to(X.dtype).T.contiguous()
        if groups is None:
            groups = torch.zeros(n_problems, dtype=torch.long)
        # a preconditioner is shared within a group, so a group holds one penalty
        _, reg_id = torch.unique(reg, return_inverse=True)
        groups = groups.cpu().long() * (int(reg_id.max()) + 1) + reg_id
        X1 = torch.cat([X, torch.ones(n, 1, dtype=X.dtype, device=X.device)], dim=1)
        pen = reg.to(device=X.device, dtype=X.dtype)[None, :, None].repeat(d + 1, 1, 1)
        pen[-1] = 0.0  # the intercept is not penalised
        theta = torch.zeros(d + 1, n_problems, k, dtype=X.dtype, device=X.device)
        if init is not None:
            coef0, icpt0 = init
            theta[:d] = coef0.to(theta).permute(2, 0, 1)
            theta[d] = icpt0.to(theta)
        self._shard = shard
        theta, n_iter = self._newton(X1, T, S, pen, theta, groups.cpu())
        self.coef_ = theta[:d].permute(1, 2, 0).contiguous()
        self.intercept_ = theta[d].contiguous()
        self.n_iter_ = n_iter
        return self

    def decision_function(self, X: Tensor) -> Tensor:
        """Linear scores, shape (n_problems, n_samples, n_outputs)."""
        return torch.einsum("nd,pkd->pnk", X, self.coef_) + self.intercept_[:, None, :]

    # -- loss pieces ------------------------------------------------------------------
    def _terms(self, eta: Tensor, T: Tensor, S: Tensor):
        """Per-problem loss, gradient wrt eta, and the curvature needed for products."""
        if self.loss == "squared":
            r = eta[..., 0] - T
            f = 0.5 * (S * r * r).sum(0)
            return f, (S * r)[..., None], S[..., None]
        if self.loss == "binary":
            e = eta[..., 0]
            f = (S * (torch.nn.functional.softplus(e) - T * e)).sum(0)
            p = torch.sigmoid(e)
            return f, (S * (p - T))[..., None], (S * p * (1 - p))[..., None]
        logp = torch.log_softmax(eta, dim=-1)
        f = -(S * logp.gather(-1, T[..., None])[..., 0]).sum(0)
        p = logp.exp()
        # p - onehot(T), without materialising the one-hot (scatter_, not the atomic
        # scatter_add_: each row writes one index, so it is deterministic on CUDA too)
        idx = T[..., None]
        g = p.clone().scatter_(-1, idx, p.gather(-1, idx) - 1.0)
        return f, g.mul_(S[..., None]), p

    def _curv_times(self, curv: Tensor, S: Tensor, d_eta: Tensor) -> Tensor:
        if self.loss != "multinomial":
            return curv * d_eta
        p = curv
        # S p (d - <p, d>), in two passes over the (N, P, K) tensor (it dominates the
        # Hessian products with many classes)
        out = p * d_eta
        out.sub_(p * out.sum(-1, keepdim=True))
        return out.mul_(S[..., None])

    def _diag_curv(self, curv: Tensor, S: Tensor) -> Tensor:
        if self.loss != "multinomial":
            return curv
        return S[..., None] * curv * (1 - curv)

    # -- the solver -------------------------------------------------------------------
    def _newton(self, X1, T, S, pen, theta, groups):
        n, d1 = X1.shape
        _, n_problems, k = theta.shape
        eps = torch.finfo(X1.dtype).eps

        def lin(v):  # (D1, P, K) -> (N, P, K)
            return (X1 @ v.reshape(d1, -1)).reshape(n, n_problems, k)

        def lin_t(g):  # (N, P, K) -> (D1, P, K), summed over the ranks
            return total(
                (X1.T @ g.reshape(n, n_problems * k)).reshape(d1, n_problems, k), self._shard
            )

        def objective(eta, th):
            f, g, curv = self._terms(eta, T, S)
            return total(f, self._shard) + 0.5 * (pen * th * th).sum((0, 2)), g, curv

        eta = lin(theta)
        f, g_eta, curv = objective(eta, theta)
        scale = total(S.sum(0), self._shard).clamp_min(1.0)
        active = torch.ones(n_problems, dtype=torch.bool, device=X1.device)
        it = 0
        for it in range(1, self.max_iter + 1):
            grad = lin_t(g_eta) + pen * theta
            gmax = grad.abs().amax((0, 2))
            active &= gmax > self.tol * scale
            if not bool(active.any()):
                it -= 1
                break
            grad = grad * active[None, :, None]
            precond = self._preconditioner(X1, S, curv, pen, groups)

            def hvp(v, idx, curv=curv):  # Hessian products for the problems in idx
                m = idx.numel()
                d_eta = (X1 @ v.reshape(d1, -1)).reshape(n, m, k)
                g = self._curv_times(curv[:, idx], S[:, idx], d_eta)
                hv = total((X1.T @ g.reshape(n, m * k)).reshape(d1, m, k), self._shard)
                return hv + pen[:, idx] * v

            # inexact Newton: loose CG early, tighter near the optimum (floored at 1e-2:
            # a linear rate of 1e-2 per Newton step is plenty, and a shared
            # preconditioner needs many CG steps for tighter solves); a quadratic loss
            # is solved in one exact step
            forcing = torch.clamp(torch.sqrt(gmax / scale), min=1e-2, max=0.5)
            if self.loss == "squared":
                forcing = torch.full_like(forcing, 1e-7)
            step = _pcg(hvp, precond, -grad, self.max_cg, forcing)
            d_eta = lin(step)
            slope = (grad * step).sum((0, 2))
            t = active.to(X1.dtype)
            accepted = ~active
            for _ in range(40):
                th_new = theta + t[None, :, None] * step
                f_new, _, _ = objective(eta + t[None, :, None] * d_eta, th_new)
                ok = f_new <= f + 1e-4 * t * slope + 10 * eps * f.abs().clamp_min(1.0)
                accepted = accepted | ok
                if bool(accepted.all()):
                    break
                t = torch.where(accepted, t, t / 2)
            # a problem whose line search fails is at the limit of float precision
            t = torch.where(accepted, t, torch.zeros_like(t))
            active &= accepted
            theta = theta + t[None, :, None] * step
            eta = eta + t[None, :, None] * d_eta
            f, g_eta, curv = objective(eta, theta)
        return theta, it

    @staticmethod
    def _kron_factor(Xr, S, curv, rows, idx, reg, scale, shard=None):
        """Kronecker-factored softmax curvature, ``(X' diag(w) X) (x) mean_n(diag(p) - p p')``
        (K-FAC's independence approximation), plus the penalty. In the eigenbasis of the
        K x K factor it is one (D+1)-square block per class: returns the eigenvectors and
        the blocks' Cholesky factors."""
        w = (S[:, idx] if rows is None else S[rows][:, idx]).mean(1)  # (rows,)
        p = (curv[:, idx, :] if rows is None else curv[rows][:, idx, :]).mean(1)  # (rows, K)
        w64, p64, x64 = w.to(torch.float64), p.to(torch.float64), Xr.to(torch.float64)
        a = total((x64 * w64[:, None]).T @ x64 * scale, shard)  # (D1, D1)
        b = total(
            torch.diag((w64[:, None] * p64).sum(0)) - (w64[:, None] * p64).T @ p64, shard
        ) / total(w64.sum(), shard).clamp_min(1e-30)
        lam, vecs = torch.linalg.eigh(b)
        # the class-sum direction has zero curvature (softmax is shift-invariant): lift it
        # to the typical one, as the full factor does
        lam = lam.clamp_min(0.0)
        lam[lam < 1e-8 * lam.max().clamp_min(1e-30)] = lam.mean()
        blocks = lam[:, None, None] * a[None] + torch.diag(reg)[None]
        eye = torch.eye(a.shape[0], dtype=torch.float64, device=a.device)
        jitter = 1e-8 * blocks.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
        chol, info = torch.linalg.cholesky_ex(blocks + jitter[:, None, None] * eye)
        while bool((info > 0).any()):
            jitter = jitter * 100
            chol, info = torch.linalg.cholesky_ex(blocks + jitter[:, None, None] * eye)
        return vecs.to(Xr.dtype), chol.to(Xr.dtype)

    def _preconditioner(self, X1, S, curv, pen, groups):
        """Cholesky factors of the group-average Hessian (exact in its class coupling).

        Binary and ridge heads have one (D+1)-square block. A softmax head couples its
        classes (curvature diag(p) - p p^T per sample); ignoring that coupling cost 25-30
        CG steps per Newton step, so the factor is of the full K(D+1)-square Hessian,
        built from max(4096, 4 (D+1)) evenly spaced rows (a preconditioner only
        needs to be close).
        """
        n, d1 = X1.shape
        k = curv.shape[-1]
        multinomial = self.loss == "multinomial"
        rows = None
        if multinomial and n > max(_PRECOND_ROWS, 4 * d1):
            rows = torch.linspace(0, n - 1, max(_PRECOND_ROWS, 4 * d1), device=X1.device).long()
        Xr = X1 if rows is None else X1[rows]
        scale = 1.0 if rows is None else n / len(rows)
        factors = []
        kron = multinomial and k >= KRON_MIN_CLASSES
        for gid in torch.unique(groups).tolist():
            idx = torch.nonzero(groups == gid).flatten().to(X1.device)
            reg = pen[:, idx[0], 0].to(torch.float64)  # one penalty per group
            if kron:
                kf = self._kron_factor(Xr, S, curv, rows, idx, reg, scale, self._shard)
                factors.append((idx, kf))
                continue
            if multinomial:
                p = curv[:, idx, :] if rows is None else curv[rows][:, idx, :]
                w = (S[:, idx] if rows is None else S[rows][:, idx])[..., None]
                # group mean of S * (diag(p) - p p^T): (rows, K, K)
                cbar = torch.diag_embed((w * p).mean(1)) - torch.einsum(
                    "njk,njl->nkl", w * p, p
                ) / len(idx)
                # one BLAS-3 product per class pair (k <= l), mirrored
                H = torch.empty(k, d1, k, d1, dtype=X1.dtype, device=X1.device)
                cbar = cbar * scale
                for a in range(k):
                    for b in range(a, k):
                        H[a, :, b] = (Xr * cbar[:, a, b, None]).T @ Xr
                        if b != a:
                            H[b, :, a] = H[a, :, b].T
                H = total(H.reshape(k * d1, k * d1), self._shard).to(torch.float64)
                H = H + torch.diag(reg.repeat(k))
                # Lift the class-sum directions (curvature: penalty only, zero for the
                # intercept) to the typical curvature. H maps zero-sum vectors to
                # zero-sum vectors and CG stays among them, so this changes nothing
                # there, but it makes the factor well conditioned (in float32 too).
                ones = torch.full((k, k), 1.0 / k, dtype=torch.float64, device=X1.device)
                eye_d = torch.eye(d1, dtype=torch.float64, device=X1.device)
                H = H + H.diagonal().mean() * torch.kron(ones, eye_d)
                blocks = H[None]
            else:
                cbar = self._diag_curv(curv, S)[:, idx, :].mean(1)  # (N, 1)
                blocks = total(torch.einsum("nd,nk,ne->kde", X1, cbar, X1), self._shard)
                blocks = blocks.to(torch.float64)
                blocks = blocks + torch.diag(reg)
            if not bool(torch.isfinite(blocks).all()):
                raise AuditError("the head's curvature is not finite (NaN or inf in the inputs?)")
            eye = torch.eye(blocks.shape[-1], dtype=torch.float64, device=X1.device)
            # a little jitter keeps the factor defined for a curvature-free intercept
            jitter = 1e-8 * blocks.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
            L, info = torch.linalg.cholesky_ex(blocks + jitter[:, None, None] * eye)
            while bool((info > 0).any()):
                jitter = jitter * 100
                L, info = torch.linalg.cholesky_ex(blocks + jitter[:, None, None] * eye)
            factors.append((idx, L.to(X1.dtype)))

        gid_of = torch.empty(curv.shape[1], dtype=torch.long, device=X1.device)
        for i, (idx, _) in enumerate(factors):
            gid_of[idx] = i

        def apply(r, sub):  # r: (D1, len(sub), K) for the problems in sub
            out = torch.empty_like(r)
            g_sub = gid_of[sub]
            for i, (_, L) in enumerate(factors):
                cols = torch.nonzero(g_sub == i).flatten()
                if cols.numel() == 0:
                    continue
                if kron:  # in the eigenbasis of the class curvature: one block per class
                    vecs, chol = L
                    rg = (r[:, cols, :] @ vecs).permute(2, 0, 1)  # (K, D1, m)
                    sol = torch.cholesky_solve(rg, chol)  # (K, D1, m)
                    out[:, cols, :] = sol.permute(1, 2, 0) @ vecs.T
                elif multinomial:  # class-major stacking, as H above
                    rg = r[:, cols, :].permute(2, 0, 1).reshape(k * d1, -1)
                    sol = torch.cholesky_solve(rg, L[0]).reshape(k, d1, -1)
                    out[:, cols, :] = sol.permute(1, 2, 0)
                else:
                    rg = r[:, cols, :].permute(2, 0, 1)  # (1, D1, m)
                    out[:, cols, :] = torch.cholesky_solve(rg, L).permute(1, 2, 0)
            if multinomial:
                # Softmax is unchanged when one vector is added to every class: along
                # that direction the Hessian is only the penalty (zero for the
                # intercept), and the solution has class-sums of zero. Gradients and
                # Hessian products keep zero class-sums; keep CG's directions there too,
                # or it wastes steps (and precision) drifting along that direction.
                out -= out.mean(-1, keepdim=True)
            return out

        return apply


_PRECOND_ROWS = 4096
# From this many classes on, the softmax Hessian's preconditioner is Kronecker-factored
# (K blocks of (D+1) squared instead of one K(D+1)-square factor: at K = 30, D = 128 the
# full factor cost 1.1 s per Newton step, most of the audit; docs/benchmarks.md)
KRON_MIN_CLASSES = 8


def _pcg(hvp, precond, b: Tensor, max_iter: int, rtol: Tensor) -> Tensor:
    """Batched preconditioned conjugate gradients; problems are columns of dim 1.

    Each iteration works only on the problems still running (``hvp(v, idx)`` and
    ``precond(r, idx)`` take the column subset), so a few slow problems do not make
    every problem pay for their extra iterations.
    """

    def dot(u, v):
        return (u * v).sum((0, 2))

    all_idx = torch.arange(b.shape[1], device=b.device)
    x = torch.zeros_like(b)
    r = b.clone()
    z = precond(r, all_idx)
    p = z.clone()
    rz = dot(r, z)
    bnorm = dot(b, b).sqrt()
    running = bnorm > 0
    for _ in range(max_iter):
        idx = torch.nonzero(running).flatten()
        if idx.numel() == 0:
            break
        p_i, r_i = p[:, idx], r[:, idx]
        Ap = hvp(p_i, idx)
        pAp = dot(p_i, Ap)
        alpha = torch.where(pAp > 0, rz[idx] / pAp.clamp_min(1e-30), torch.zeros_like(pAp))
        x[:, idx] += alpha[None, :, None] * p_i
        r_i = r_i - alpha[None, :, None] * Ap
        r[:, idx] = r_i
        still = (dot(r_i, r_i).sqrt() > rtol[idx] * bnorm[idx]) & (pAp > 0)
        z_i = precond(r_i, idx)
        rz_new = dot(r_i, z_i)
        # rounding can leave a tiny residual with r.z <= 0: that problem is done
        still &= rz_new > 0
        beta = torch.where(still, rz_new / rz[idx].clamp_min(1e-30), torch.zeros_like(rz_new))
        p[:, idx] = z_i + beta[None, :, None] * p_i
        rz[idx] = rz_new
        running[idx] = still
    return x
