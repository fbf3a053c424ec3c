"""Does a KDSR implicit degradation representation (IDR) encode the degradation or the photo?

Evidence arithmetic on IDRs computed elsewhere (e.g. :func:`kdsr_pdd.commands.figures.compute_idrs`), numpy only.
Inputs are an IDR matrix ``idrs`` [N, D] (one row per LR image), a scalar degradation target ``target`` [N]
(the blur width sigma, or the noise level) and integer group labels [N]:

* ``photo_ids``: which photo the LR was made from. The probe never trains and tests on the same photo.
* ``content_ids``: which HR *content* (a photo, or one crop of it) the LR was made from; rows sharing a
  content id differ only in their degradation. Used by the variation ratio. With one crop per photo it
  equals ``photo_ids``.

Three numbers:

:func:`loo_ridge_r2` -- leave-one-photo-out ridge probe, pooled R^2.
    For every photo g: fit a ridge regression target ~ IDR on all rows of the *other* photos and predict
    the rows of g. Features are standardised with the mean and std of the training rows only (a feature
    with zero training std is only centred); the target is centred on its training mean, which is the
    intercept (not penalised). Ridge: ``w = (X^T X + alpha I)^-1 X^T y`` on the standardised X.
    The ridge strength ``alpha`` is chosen, per held-out photo, by *nested* leave-one-photo-out CV on
    the training photos alone: every alpha of ``alphas`` (default ``DEFAULT_ALPHAS`` = 10^-6 .. 10^4, 21
    values) is scored by its pooled squared error over the inner held-out predictions and the smallest
    error wins (ties: the larger alpha). With fewer than 3 training photos no inner CV is possible and
    ``fallback_alpha`` (1.0) is used; passing a single alpha fixes it.
    The score is the *pooled* R^2 over all N held-out predictions:
    ``R^2 = 1 - sum_i (y_i - yhat_i)^2 / sum_i (y_i - mean(y))^2``, the mean taken over all N targets.
    It is 1 for perfect predictions, 0 for predicting the overall mean, and negative when worse: a
    representation that carries no degradation information scores <= 0 (up to noise).

:func:`variation_ratio` -- within-content over between-content variation of the IDR.
    ``W = mean over contents c of sum_d Var_{rows of c}(idr[:, d])`` (how much the IDR moves when only the
    degradation changes) and ``B = sum_d Var_c(mean_{rows of c} idr[:, d])`` (how much the per-content
    mean IDRs differ), both population variances (ddof = 0); ratio = W / B. A ratio << 1 means that
    the IDR mostly tells contents apart; a ratio >> 1 that it mostly follows the degradation.

:func:`mean_cosine` -- mean over rows of cos(student_i, teacher_i) of paired IDRs.
"""
from typing import NamedTuple

import numpy as np

DEFAULT_ALPHAS = tuple(10.0 ** np.arange(-6.0, 4.5, 0.5))
FALLBACK_ALPHA = 1.0


class ProbeResult(NamedTuple):
    """Leave-one-photo-out probe: pooled ``r2``, the held-out ``predictions`` [N] and ``alphas`` {photo: alpha}."""
    r2: float
    predictions: np.ndarray
    alphas: dict


def _as_inputs(idrs, target, groups):
    x = np.asarray(idrs, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    g = np.asarray(groups)
    if x.ndim != 2:
        raise ValueError(f'idrs must be [N, D], got shape {x.shape}')
    if y.shape != (x.shape[0], ) or g.shape != (x.shape[0], ):
        raise ValueError(f'target and groups must be [N] with N = {x.shape[0]}, got {y.shape} and {g.shape}')
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise ValueError('idrs and target must be finite')
    return x, y, g


def pooled_r2(target, predictions):
    """``1 - SS_res / SS_tot`` with SS_tot around the mean of all targets; raises when the target is constant."""
    y = np.asarray(target, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        raise ValueError('R^2 is undefined for a constant target')
    return 1.0 - float(((y - p) ** 2).sum()) / ss_tot


def _fit_predict(x_train, y_train, x_test, alphas):
    """Ridge predictions [len(alphas), n_test]: standardised on the training rows, unpenalised intercept."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    xs, xt = (x_train - mean) / std, (x_test - mean) / std
    y_mean = y_train.mean()
    # Ridge through the SVD of the standardised design: w = V diag(s / (s^2 + alpha)) U^T y.
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y_train - y_mean)
    out = np.empty((len(alphas), len(x_test)))
    for k, alpha in enumerate(alphas):
        w = vt.T @ (s / (s * s + alpha) * uty)
        out[k] = y_mean + xt @ w
    return out


def _choose_alpha(x, y, g, alphas, fallback_alpha):
    photos = np.unique(g)
    if len(alphas) == 1:
        return float(alphas[0])
    if len(photos) < 3:
        return float(fallback_alpha)
    sse = np.zeros(len(alphas))
    for photo in photos:
        test = g == photo
        sse += ((_fit_predict(x[~test], y[~test], x[test], alphas) - y[test]) ** 2).sum(axis=1)
    best = np.flatnonzero(sse <= sse.min() * (1 + 1e-12))
    return float(alphas[best.max()])  # ties: the strongest regularisation


def loo_ridge_r2(idrs, target, photo_ids, alphas=DEFAULT_ALPHAS, fallback_alpha=FALLBACK_ALPHA):
    """Leave-one-photo-out ridge probe of ``target`` [N] from ``idrs`` [N, D]; see the module docstring.

    Args:
        idrs: [N, D] IDRs.
        target: [N] scalar degradation parameter (sigma, noise level).
        photo_ids: [N] photo labels (at least 2 distinct).
        alphas: ridge strengths to choose from by nested leave-one-photo-out CV on the training photos
            (sorted ascending internally); a single value fixes alpha.
        fallback_alpha: alpha used when fewer than 3 training photos leave no inner CV.

    Returns:
        ProbeResult(r2, predictions [N], alphas {photo: chosen alpha}).
    """
    x, y, g = _as_inputs(idrs, target, photo_ids)
    alphas = np.sort(np.asarray(alphas, dtype=np.float64).ravel())
    if alphas.size == 0 or (alphas < 0).any():
        raise ValueError(f'alphas must be a non-empty set of values >= 0, got {alphas}')
    photos = np.unique(g)
    if len(photos) < 2:
        raise ValueError('leave-one-photo-out needs at least 2 photos')
    predictions = np.empty_like(y)
    chosen = {}
    for photo in photos:
        test = g == photo
        alpha = _choose_alpha(x[~test], y[~test], g[~test], alphas, fallback_alpha)
        chosen[photo.item() if hasattr(photo, 'item') else photo] = alpha
        predictions[test] = _fit_predict(x[~test], y[~test], x[test], [alpha])[0]
    return ProbeResult(pooled_r2(y, predictions), predictions, chosen)


def variation_ratio(idrs, content_ids):
    """Within-content / between-content variation of ``idrs`` [N, D] (module docstring); returns ``W / B``.

    Needs at least 2 contents; raises when the per-content means are all equal (B = 0).
    """
    x = np.asarray(idrs, dtype=np.float64)
    g = np.asarray(content_ids)
    if x.ndim != 2 or g.shape != (x.shape[0], ):
        raise ValueError(f'idrs must be [N, D] and content_ids [N], got {x.shape} and {g.shape}')
    contents = np.unique(g)
    if len(contents) < 2:
        raise ValueError('the variation ratio needs at least 2 contents')
    within = np.mean([x[g == c].var(axis=0).sum() for c in contents])
    means = np.stack([x[g == c].mean(axis=0) for c in contents])
    between = means.var(axis=0).sum()
    if between == 0:
        raise ValueError('the per-content mean IDRs are identical: the between-content variation is 0')
    return float(within / between)


def mean_cosine(student_idrs, teacher_idrs):
    """Mean over rows of the cosine similarity of paired IDRs [N, D]; raises on a zero-norm row."""
    s = np.asarray(student_idrs, dtype=np.float64)
    t = np.asarray(teacher_idrs, dtype=np.float64)
    if s.ndim != 2 or s.shape != t.shape:
        raise ValueError(f'student and teacher IDRs must be [N, D] of the same shape, got {s.shape} and {t.shape}')
    ns, nt = np.linalg.norm(s, axis=1), np.linalg.norm(t, axis=1)
    if (ns == 0).any() or (nt == 0).any():
        raise ValueError('the cosine similarity is undefined for a zero IDR')
    return float(np.mean((s * t).sum(axis=1) / (ns * nt)))
