"""Transferability scores of cached features: LogME, the (shrinkage) H-score, leave-one-out nearest centroid.

All are exact for D >> N and never build a D x D matrix there: `FeatureStats` reads the features in
chunks converted to float64 (float32 where that is exact: small integers), into the cross-product of the
cheaper side, the Gram matrix F Fᵀ (N x N) when
D >= N, else Fᵀ F (D x D, small then), and every score works from it:

  logme              LogME, You et al., ICML 2021 / JMLR 2022; the fixed-point iteration of
                     github.com/thuml/LogME LogME.py `_fit_fixed_point` (vendored in tests/reference/)
  h_score            H-score, Bao et al., ICIP 2019; with shrinkage (default) the Ledoit-Wolf H-score of
                     Ibrahim, Ponomareva & Mazumder, ECML-PKDD 2022 ("Newer is not always better"), as
                     thuml/Transfer-Learning-Library tllib/ranking/hscore.py `regularized_h_score`
  nearest_centroid   leave-one-out nearest-class-mean accuracy on the given rows

A caller scoring many layers builds one `FeatureStats` per layer (`score_all` does): one pass over the
features (two on the D < N side) and one eigendecomposition (for LogME) per layer; the H-score adds one
Cholesky factorisation.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

_CHUNK_BYTES = 32 * 2**20  # the float64 copy of one chunk of features


def _check(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The features (unconverted), labels mapped to 0..C-1 and the class counts, or a ValueError."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"features must be a non-empty 2-D array (N x D), got shape {features.shape}")
    if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
        raise ValueError(f"features must be float or integer, got dtype {features.dtype}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape}, dtype {labels.dtype}")
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    _, y, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(counts) < 2:
        raise ValueError(f"transferability scores need at least 2 classes, got {len(counts)}")
    return features, y.reshape(-1).astype(np.intp), counts


def _exact_in_float32(features: np.ndarray, terms: int) -> bool:
    """Integer features small enough that a sum of `terms` products is an integer below 2**24, which float32
    holds exactly, as every partial sum (checked on the values: terms * max|x|**2 < 2**24)."""
    if not np.issubdtype(features.dtype, np.integer):
        return False
    largest = max(abs(int(features.min())), abs(int(features.max())))
    return terms * largest**2 < 2**24


def _finite(chunk: np.ndarray) -> np.ndarray:
    """The float64 chunk, or a ValueError if it holds a NaN or inf (checked before any product warns)."""
    if not np.isfinite(chunk).all():
        raise ValueError("features contain NaN or inf")
    return chunk


def _eigh_projected(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) of the symmetric a and Vᵀ b, V its eigenvectors, without forming V: LAPACK
    dsytrd reduces a to T = Qᵀ a Q, its Householder reflectors give Qᵀ b, dstevd the eigenpairs (λ, Z) of T,
    and Vᵀ b = Zᵀ Qᵀ b. Skips eigh's back-transformation of all n eigenvectors, most of its time here."""
    n = a.shape[0]
    if n < 3:
        lam, vec = np.linalg.eigh(a)
        return lam, vec.T @ b
    lwork = int(scipy.linalg.lapack.dsytrd_lwork(n, lower=1)[0])
    packed, d, e, tau, info = scipy.linalg.lapack.dsytrd(a.T, lower=1, lwork=lwork)  # a.T: Fortran order
    if info != 0:
        raise np.linalg.LinAlgError(f"dsytrd failed (info {info})")
    w = np.array(b, dtype=np.float64)
    for i in range(n - 1):  # Qᵀ b = H(n-1)···H(1) b, H(i) = I - tau_i v vᵀ, v = (0, .., 0, 1, packed[i+2:, i])
        if tau[i] != 0.0:
            v = packed[i + 1 :, i].copy()
            v[0] = 1.0
            w[i + 1 :] -= np.outer(tau[i] * v, v @ w[i + 1 :])
    lam, z, info = scipy.linalg.lapack.dstevd(d, e)
    if info != 0:
        raise np.linalg.LinAlgError(f"dstevd failed (info {info})")
    return lam, z.T @ w


def _solve_psd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a⁻¹ b for a symmetric positive definite a (Cholesky), a⁺ b where that fails (numerically singular)."""
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a, lower=True, check_finite=False), b)
    except np.linalg.LinAlgError:
        lam, vec = np.linalg.eigh(a)
        keep = lam > lam.max() * max(a.shape) * np.finfo(np.float64).eps
        return vec[:, keep] @ ((vec[:, keep].T @ b) / lam[keep, None])


class FeatureStats:
    """What the scores share, from a pass over N x D features (any float or integer dtype; a second pass on
    the D < N side for the centred quantities the H-score and the nearest centroid use): the float64
    cross-product of the cheaper side and, lazily, its eigendecomposition and centered versions.

    side "gram" (D >= N): G = F Fᵀ (N x N); everything else follows from G (centering is P G P).
    side "cov" (D < N): K = Fᵀ F (D x D) and the class sums Fᵀ Y; a second pass gives the centered rows'
    norms and their products with the centered class means.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray) -> None:
        features, self.labels, self.counts = _check(features, labels)
        self.n, self.d = features.shape
        self.n_classes = len(self.counts)
        self.side = "gram" if self.d >= self.n else "cov"  # LogME.py branches the same way (N > D: truncated_svd)
        self._features = features
        self._onehot = np.zeros((self.n, self.n_classes))
        self._onehot[np.arange(self.n), self.labels] = 1.0
        self._eig_cache: tuple[np.ndarray, np.ndarray] | None = None
        self._centered_cache: dict[str, np.ndarray] | None = None
        # Integer features whose chunk products sum below 2**24 (FNE's {-1, 0, 1}) have exact float32
        # cross-products, accumulated in float64: about half the time of float64, the same numbers.
        if self.side == "gram":
            step = max(1, _CHUNK_BYTES // (8 * self.n))
            dtype = np.float32 if _exact_in_float32(features, terms=min(step, self.d)) else np.float64
            self.cross = np.zeros((self.n, self.n))
            for j in range(0, self.d, step):
                chunk = _finite(np.ascontiguousarray(features[:, j : j + step], dtype=dtype))
                self.cross += chunk @ chunk.T  # numpy calls syrk for a @ a.T
        else:
            step = max(1, _CHUNK_BYTES // (8 * self.d))
            dtype = np.float32 if _exact_in_float32(features, terms=min(step, self.n)) else np.float64
            self.cross = np.zeros((self.d, self.d))
            self._class_sums = np.zeros((self.n_classes, self.d))  # Yᵀ F
            onehot = self._onehot.astype(dtype)
            for i in range(0, self.n, step):
                chunk = _finite(np.ascontiguousarray(features[i : i + step], dtype=dtype))
                self.cross += chunk.T @ chunk
                self._class_sums += onehot[i : i + step].T @ chunk
        if not np.isfinite(self.cross).all():
            raise ValueError("features too large: their squares overflow float64")

    # --- shared pieces -------------------------------------------------------------------------------------

    def _eig(self) -> tuple[np.ndarray, np.ndarray]:
        """For LogME: the eigenvalues of the raw cross-product and the targets on its eigenvectors,
        Vᵀ Y (gram: V = U, F's left singular vectors) or Vᵀ Fᵀ Y (cov: V = F's right singular vectors)."""
        if self._eig_cache is None:
            b = self._onehot if self.side == "gram" else self._class_sums.T
            self._eig_cache = _eigh_projected(self.cross, b)
        return self._eig_cache

    def _centered(self) -> dict[str, np.ndarray]:
        """The centered features X = F - 1μᵀ, through: `cross` (X Xᵀ or Xᵀ X), `row_sq` (‖x_i‖²),
        `xm` (X Mᵀ, N x C, M the centered class means), `m_sq` (‖m_c‖²) and, on the cov side, `means` (M)."""
        if self._centered_cache is not None:
            return self._centered_cache
        n, a = self.n, self._onehot / self.counts  # a_c = 1{y=c}/n_c: class means are Xᵀ a_c
        if self.side == "gram":
            g = self.cross
            r = g.mean(axis=1)
            gc = g - r[:, None] - r[None, :] + r.mean()  # P G P, P = I - 11ᵀ/N
            xm = gc @ a
            out = {"cross": gc, "row_sq": np.diag(gc).copy(), "xm": xm, "m_sq": np.einsum("ic,ic->c", a, xm)}
        else:
            mu = self._class_sums.sum(axis=0) / n
            means = self._class_sums / self.counts[:, None] - mu
            row_sq, xm = np.empty(n), np.empty((n, self.n_classes))
            step = max(1, _CHUNK_BYTES // (8 * self.d))
            for i in range(0, n, step):
                chunk = np.asarray(self._features[i : i + step], dtype=np.float64) - mu
                row_sq[i : i + step] = np.einsum("ij,ij->i", chunk, chunk)
                xm[i : i + step] = chunk @ means.T
            kc = self.cross - n * np.outer(mu, mu)
            out = {"cross": kc, "row_sq": row_sq, "xm": xm, "m_sq": np.einsum("cd,cd->c", means, means)}
            out["means"] = means
        self._centered_cache = out
        return out

    # --- scores --------------------------------------------------------------------------------------------

    def logme(self, corrected: bool = False) -> float:
        """LogME of one-hot targets: per class the evidence maximised over (alpha, beta) by the fixed-point
        iteration of thuml/LogME LogME.py `_fit_fixed_point`, divided by N, averaged over the classes.

        Same spectral quantities as there: D >= N all N eigenvalues of F Fᵀ (its `np.linalg.svd(f)` branch),
        D < N all D eigenvalues of Fᵀ F (its `truncated_svd`). For D > N that code's log|A| sums over the N
        eigenvalues only, leaving out the -(D - N)/2 log(alpha) of the D - N zero ones (thuml/LogME issue #23,
        fix in PR #24, unmerged): the number grows with appended zero columns. corrected=False gives that
        published number; corrected=True the evidence of the paper's formula (differs only when D > N)."""
        lam, proj = self._eig()
        if self.side == "gram":
            sigma = np.clip(lam, 0.0, None)[:, None]
            x2 = proj**2  # (Uᵀ y)²
        else:
            # truncated_svd keeps the singular values above 1e-10 of the SVD of Fᵀ F, whose null directions come
            # out at round-off level (~eps ‖F‖², above that threshold), so in practice it keeps all D; ours can
            # return exact zeros, hence all D kept here. Uᵀ y = Vᵀ Fᵀ y / s (U = F V / s), taken as 0 for
            # round-off-level s, where the reference's value is noise of no weight (σ ≈ 0 multiplies it).
            sigma = np.abs(lam)[:, None]  # svd of Fᵀ F returns |eigenvalues|
            null = sigma[:, 0] <= sigma.max() * self.d * np.finfo(np.float64).eps
            x2 = np.where(null[:, None], 0.0, proj**2 / np.where(null, 1.0, sigma[:, 0])[:, None])
        if not (sigma > 0).any():  # all-zero inputs: alpha -> 0 and the fixed point divides 0 by 0
            return float("nan")
        res_x2 = self.counts - x2.sum(axis=0)  # ‖y‖² - ‖Uᵀy‖²: the part of y outside U's span
        missing = self.d - len(sigma) if corrected else 0
        return _logme_fixed_point(sigma, x2, res_x2, self.n, self.d, missing)

    def ledoit_wolf_shrinkage(self) -> float:
        """The Ledoit-Wolf shrinkage of the centered features, as sklearn.covariance.ledoit_wolf_shrinkage
        computes it (same formula), from N-space sums: Σ_i ‖x_i‖⁴ and ‖XᵀX‖_F² = ‖XXᵀ‖_F²."""
        if self.d == 1:
            return 0.0  # sklearn: one feature, any shrinkage gives the same estimate
        c = self._centered()
        n, d = self.n, self.d
        trace = c["row_sq"].sum() / n  # tr(emp_cov)
        mu = trace / d
        beta_ = float(np.sum(c["row_sq"] ** 2))  # sum of <X2ᵀ, X2>
        delta_ = float(np.sum(c["cross"] ** 2)) / n**2  # sum of squared <Xᵀ, X>, / n²
        beta = 1.0 / (d * n) * (beta_ / n - delta_)
        delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d
        beta = min(beta, delta)
        return 0.0 if beta == 0 else float(beta / delta)

    def h_score(self, shrinkage: bool = True) -> float:
        """H-score tr(cov(f)⁻¹ cov(E[f|y])) (Bao et al., ICIP 2019).

        shrinkage=True: tllib `regularized_h_score` (Ibrahim et al. 2022): tr(S⁻¹ (1 - α) cov(E[f|y])) with
        S = (1 - α) Σ + α (tr Σ / D) I the Ledoit-Wolf covariance (Σ = XᵀX / N) and cov(E[f|y]) = np.cov
        (divisor N - 1), as that code has them. With X S⁻¹ Xᵀ = G (bG + cI)⁻¹ (push-through; G = XXᵀ,
        b = (1 - α)/N, c = α tr Σ / D) it is an N x N solve when D >= N.

        shrinkage=False: tllib `h_score`: tr(pinv(cov f) cov(E[f|y])); the pseudo-inverse drops eigenvalues
        below max(N, D)·eps times the largest. For D >= N the covariance is singular and the score is
        ill-posed: once X has rank N - 1 (generic for D >= N - 1) it equals C - 1 whatever the features."""
        c = self._centered()
        n, d = self.n, self.d
        if not shrinkage:
            return self._plain_h_score()
        alpha = self.ledoit_wolf_shrinkage()
        ridge = alpha * c["row_sq"].sum() / (n * d)  # α μ, μ = tr Σ / D
        if ridge <= 0:  # α = 0 (or X = 0): S = Σ and the score is N/(N-1) times the plain one
            return n / (n - 1) * self._plain_h_score()
        b = (1.0 - alpha) / n
        if self.side == "gram":
            shrunk = b * c["cross"]
            shrunk[np.diag_indices(n)] += ridge
            z = _solve_psd(shrunk, c["xm"])  # (bG + cI)⁻¹ G A: column c gives S⁻¹ m_c through X
            quad = np.bincount(self.labels, weights=z[np.arange(n), self.labels], minlength=self.n_classes)
        else:
            shrunk = b * c["cross"]
            shrunk[np.diag_indices(d)] += ridge
            z = _solve_psd(shrunk, c["means"].T)  # S⁻¹ m_c
            quad = self.counts * np.einsum("cd,dc->c", c["means"], z)
        return float((1.0 - alpha) * quad.sum() / (n - 1))  # Σ_c n_c m_cᵀ S⁻¹ m_c (1 - α) / (N - 1)

    def _plain_h_score(self) -> float:
        c = self._centered()
        if self.side == "gram":  # X (XᵀX)⁺ Xᵀ projects onto X's column space: Σ_c n_c a_cᵀ Π a_c
            lam, proj = _eigh_projected(c["cross"], self._onehot / self.counts)
            keep = lam > lam.max() * max(self.n, self.d) * np.finfo(np.float64).eps
            quad = self.counts * np.einsum("kc,kc->c", proj[keep], proj[keep])
        else:  # Σ_c n_c m_cᵀ (XᵀX)⁺ m_c
            lam, proj = _eigh_projected(c["cross"], c["means"].T)
            keep = lam > lam.max() * max(self.n, self.d) * np.finfo(np.float64).eps
            quad = self.counts * np.einsum("kc,kc->c", proj[keep] / lam[keep, None], proj[keep])
        return float(quad.sum())  # the N - 1 divisors of both covariances cancel

    def nearest_centroid_accuracy(self) -> float:
        """Leave-one-out nearest-class-mean accuracy (Euclidean): row i of class c is compared with its own
        class's mean without it, (n_c μ_c - x_i)/(n_c - 1), at distance n_c/(n_c - 1) ‖x_i - μ_c‖; a class of
        one row has no mean for that row. Ties go to the lowest class index."""
        c = self._centered()  # distances are translation-invariant; centering keeps them accurate
        dist = c["row_sq"][:, None] - 2.0 * c["xm"] + c["m_sq"][None, :]
        rows = np.arange(self.n)
        own = self.counts[self.labels]
        # (own - 1) floored at 1 only to keep the division finite; a row alone in its class gets inf (its own
        # distance is 0 up to round-off, possibly negative: never multiply it by inf)
        own_dist = dist[rows, self.labels] * (own / np.maximum(own - 1.0, 1.0)) ** 2
        dist[rows, self.labels] = np.where(own > 1, own_dist, np.inf)
        return float(np.mean(np.argmin(dist, axis=1) == self.labels))


def _logme_fixed_point(
    sigma: np.ndarray, x2: np.ndarray, res_x2: np.ndarray, n: int, d: int, missing: int = 0
) -> float:
    """LogME.py `_fit_fixed_point`'s per-class loop, all classes at once (columns of x2); a class stops
    updating at the iteration where it converged there, so every class ends with that code's values.
    sigma: k x 1 squared singular values; x2: k x C (Uᵀy)²; res_x2: C, ‖y‖² - ‖Uᵀy‖²; missing: zero
    eigenvalues of FᵀF not in sigma to count in log|A| (each adds log(alpha)); they change nothing else."""
    n_classes = x2.shape[1]
    alpha, beta = np.ones(n_classes), np.ones(n_classes)
    m2, res2 = np.zeros(n_classes), np.zeros(n_classes)
    active = np.ones(n_classes, dtype=bool)
    for _ in range(11):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(axis=0)
        new_m2 = (sigma * x2 / ((t + sigma) ** 2)).sum(axis=0)
        new_res2 = (x2 / ((1 + sigma / t) ** 2)).sum(axis=0) + res_x2
        new_alpha = gamma / (new_m2 + 1e-5)
        new_beta = (n - gamma) / (new_res2 + 1e-5)
        alpha, beta = np.where(active, new_alpha, alpha), np.where(active, new_beta, beta)
        m2, res2 = np.where(active, new_m2, m2), np.where(active, new_res2, res2)
        active &= ~(np.abs(new_alpha / new_beta - t) / t <= 1e-3)
        if not active.any():
            break
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * sigma), axis=0)
        - 0.5 * missing * np.log(alpha)
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * np.log(2 * np.pi)
    )
    return float(np.mean(evidence / n))


def logme(features: np.ndarray, labels: np.ndarray, corrected: bool = False) -> float:
    """LogME (You et al., ICML 2021), classification: thuml/LogME LogME.py's number, or with corrected=True
    its log-determinant over all D eigenvalues (see `FeatureStats.logme`)."""
    return FeatureStats(features, labels).logme(corrected=corrected)


def h_score(features: np.ndarray, labels: np.ndarray, shrinkage: bool = True) -> float:
    """H-score (Bao et al., ICIP 2019); with shrinkage the Ledoit-Wolf version (Ibrahim et al., ECML-PKDD 2022)."""
    return FeatureStats(features, labels).h_score(shrinkage=shrinkage)


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out nearest-class-mean accuracy of the rows (see `FeatureStats.nearest_centroid_accuracy`)."""
    return FeatureStats(features, labels).nearest_centroid_accuracy()


def score_all(features: np.ndarray, labels: np.ndarray, logme_corrected: bool = False) -> dict[str, float]:
    """logme, h_score (with shrinkage) and nearest_centroid from one `FeatureStats`."""
    stats = FeatureStats(features, labels)
    return {
        "logme": stats.logme(corrected=logme_corrected),
        "h_score": stats.h_score(shrinkage=True),
        "nearest_centroid": stats.nearest_centroid_accuracy(),
    }
