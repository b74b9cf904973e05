"""The auxiliary confidence loss of Burns et al. (2023, "Weak-to-Strong Generalization", section 4.3.2) for a
linear probe: logistic regression on weak labels, with an extra term that pulls it towards its own hardened
predictions, so the strong model can disagree with a weak label it is confident is wrong.

    L(f) = (1 - alpha) CE(f(x), weak label) + alpha CE(f(x), hardened f(x)) + ||W||^2 / (2 C)

The penalty is scikit-learn's LogisticRegression's (intercept free; a binary probe has one logit, a multi-class one
a logit per class), so alpha = 0 is plain logistic regression (tests/test_w2s.py checks it against scikit-learn).

Burns et al. train by SGD for an epoch or two, recompute the hardened predictions on every batch without a gradient
through them, and warm alpha up over the first 10% of training: the model's "own" prediction on an example is
mostly what it generalises to, not a memory of that example's weak label. A probe is fit on the whole sample at once
and, with more features than examples, can reproduce every weak label, which would make its own predictions the weak
labels and the extra term a no-op. So here its own predictions are cross-fitted (each fold's from a fit on the other
folds' targets) and the fixed point is reached by rounds: start from the weak labels (alpha = 0, the warm-up),
harden the cross-fitted predictions, mix, and repeat until the hardened predictions stop changing (or come back to
an earlier set: a cycle, reported as not converged); the final probe is fit on all examples with the last mixed
targets.

Hardening, as in their code for two classes: class 1 goes to the examples whose p(class 1) ranks in the top share
that the weak labels give class 1 (an adaptive threshold, so the probe cannot collapse onto one class); with more
classes (which their loss does not cover) it is the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax


@dataclass
class ConfidenceFit:
    """A fitted probe: its log-probabilities on the eval features, and how the rounds went."""

    log_proba: np.ndarray  # (eval, classes)
    rounds: int  # refits after the alpha = 0 fit
    converged: bool  # the hardened predictions stopped changing (not: they cycled, or max_rounds ran out)
    overruled: int  # train examples whose final hardened prediction differs from their weak label


def _logits(x: np.ndarray, params: np.ndarray, n_classes: int) -> np.ndarray:
    """(examples, classes) logits; a binary probe's first class has logit 0."""
    k = 1 if n_classes == 2 else n_classes
    w, b = params[:-k].reshape(x.shape[1], k), params[-k:]
    z = x @ w + b
    return np.concatenate([np.zeros((len(x), 1)), z], axis=1) if n_classes == 2 else z


def soft_logistic_fit(
    x: np.ndarray, targets: np.ndarray, n_classes: int, C: float, start: np.ndarray | None = None, max_iter: int = 2000
) -> np.ndarray:
    """Parameters (weights then intercepts) of L2 logistic regression on soft targets (rows summing to 1):
    sum_i CE(targets_i, softmax(logits_i)) + ||W||^2 / (2 C), by L-BFGS from `start` (zeros by default)."""
    k = 1 if n_classes == 2 else n_classes
    width = x.shape[1]

    def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
        logp = log_softmax(_logits(x, params, n_classes), axis=1)
        w = params[:-k].reshape(width, k)
        residual = np.exp(logp) - targets  # d CE / d logits, per example
        if n_classes == 2:
            residual = residual[:, 1:]
        grad = np.concatenate([(x.T @ residual + w / C).ravel(), residual.sum(0)])
        return float(-(targets * logp).sum() + (w**2).sum() / (2 * C)), grad

    x0 = np.zeros(width * k + k) if start is None else start
    found = minimize(loss_and_grad, x0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-8})
    return found.x


def harden(log_proba: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The probe's own predictions as labels: for two classes, class 1 for the examples ranked highest on p(class 1),
    as many as the weak labels give class 1 (stable ranking, so ties are broken by position); else the argmax."""
    if log_proba.shape[1] != 2:
        return log_proba.argmax(1)
    n_ones = int((weak == 1).sum())
    order = np.argsort(-log_proba[:, 1], kind="stable")
    hard = np.zeros(len(weak), dtype=int)
    hard[order[:n_ones]] = 1
    return hard


def _cross_fitted(xs: np.ndarray, targets: np.ndarray, n_classes: int, C: float, folds: int, max_iter: int):
    """Log-probabilities of each example from a fit on the other folds (folds: a fixed interleaving of the
    examples, so every fold holds a spread of them)."""
    fold = np.arange(len(xs)) % min(folds, len(xs))
    out = np.zeros((len(xs), n_classes))
    for f in np.unique(fold):
        fit = soft_logistic_fit(xs[fold != f], targets[fold != f], n_classes, C, max_iter=max_iter)
        out[fold == f] = log_softmax(_logits(xs[fold == f], fit, n_classes), axis=1)
    return out


def confidence_fit_predict(
    x: np.ndarray,
    weak: np.ndarray,
    x_eval: np.ndarray,
    n_classes: int,
    alpha: float,
    C: float = 1.0,
    max_iter: int = 2000,
    folds: int = 4,
    max_rounds: int = 20,
) -> ConfidenceFit:
    """Fit the probe on features `x` and weak labels `weak` (class indices) with the confidence loss of weight
    `alpha`, features standardised as the plain probe's are; score `x_eval`. alpha = 0: plain logistic regression."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs, xe = scaler.transform(x), scaler.transform(x_eval)
    onehot = np.eye(n_classes)[weak]
    targets, hard, seen = onehot, weak, set()
    rounds, converged = 0, alpha == 0
    while not converged and rounds < max_rounds:
        new = harden(_cross_fitted(xs, targets, n_classes, C, folds, max_iter), weak)
        rounds += 1
        converged = rounds > 1 and bool((new == hard).all())
        if new.tobytes() in seen and not converged:
            break  # a cycle of hardened labels: stop at this one (not converged)
        seen.add(new.tobytes())
        hard, targets = new, (1 - alpha) * onehot + alpha * np.eye(n_classes)[new]
    params = soft_logistic_fit(xs, targets, n_classes, C, max_iter=max_iter)
    overruled = int((hard != weak).sum()) if alpha else 0
    return ConfidenceFit(log_softmax(_logits(xe, params, n_classes), axis=1), rounds, converged, overruled)
