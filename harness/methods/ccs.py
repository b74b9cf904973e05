"""Contrast-Consistent Search (CCS; Burns et al. 2022): an unsupervised linear probe on frozen hidden states.

Each example is rendered with the preset's template (a question: `lm-eval` by default) and completed with each of
its K answer choices; every layer's hidden state at the last token of each completion is one statement of the
contrast. Each answer position is normalised with the train sample's statistics (so the probe cannot read which
answer was appended), then one linear probe with a sigmoid, p(x) = sigmoid(w.x + b), is fit per layer with no labels:

    two choices (Burns et al.):  (p(x+) - (1 - p(x-)))^2  +  min(p(x+), p(x-))^2
    K choices (this harness):    (sum_k p_k - 1)^2        +  sum_k p_k^2 - max_k p_k^2

The K-choice loss says "exactly one answer is true". For K = 2 it is Burns et al.'s loss term for term, so two-choice
tasks get the paper's CCS; CB's three answers get the same idea without pairing choices up (pairwise consistency is
wrong when neither answer of a pair is true, and one-vs-rest needs a state for "not k", which no completion gives).
Every layer is fit with several random restarts, keeping the lowest final loss (Burns et al.); all layers and restarts
train at once as one batched problem, which is exact since their losses are independent and AdamW acts elementwise.

Labels are used only after training and on train only, for two things: the sign (a CCS direction and its negation
fit equally well for two choices, so the negated probe is kept where it gets more train answers right) and the layer
(the most train answers right after the sign fix; ties go to the shallower layer). Eval data chooses nothing: it is
normalised with the train statistics (Burns et al.'s code normalised the test set with its own statistics and fixed
the sign on test labels), and its per-layer accuracies are kept for the report's plot only.

Scores per choice: log(p_k / sum_j p_j). Its argmax is Burns et al.'s prediction for two choices (the larger of
(p+ + 1 - p-) / 2 and its complement).

Farquhar et al. (2023) show that CCS finds whichever feature of the contrast is most prominent, not necessarily the
model's knowledge: the report puts CCS beside the supervised probe and CCS's own run on the re-initialised model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from harness.errors import HarnessError
from harness.methods import is_random_init
from harness.methods.base import RunContext, TrainedMethod, TrainedUnit, register, trained_unit_examples
from harness.methods.presets import Preset, setting
from harness.methods.probing import class_records, features_model, preset_layers
from harness.store import VariantRecords

if TYPE_CHECKING:
    from harness.engine import Engine
    from harness.features import FeatureCache
    from harness.prompts import PromptSet, Template
    from harness.tasks import Example, TaskSpec


@dataclass(frozen=True)
class CCSPreset(Preset):
    """probes/ccs.yaml: which hidden states are read, how they are normalised, and how the probe is fit."""

    layers: Literal["all"] | list[int] = setting("all, or a list of layer indices (0 = embeddings)")
    normalization: Literal["mean", "scale", "standardize"] = setting(
        "per answer position, with the train sample's statistics: mean (subtract its mean), scale (then divide by "
        "its standard deviation averaged over dimensions), standardize (then divide each dimension by its own)"
    )
    restarts: int = setting("random initialisations per layer; the lowest final loss is kept", positive=True)
    epochs: int = setting("full-batch AdamW steps per restart", positive=True)
    learning_rate: float = setting("AdamW's learning rate, constant", positive=True)
    weight_decay: float = setting("AdamW's decoupled weight decay (0: none)", at_least=0)


# ---------------------------------------------------------------- the fit, on arrays (no model)
@dataclass
class CCSFit:
    """A CCS probe per layer, fit without labels; `sign_fix` then flips probes and picks the layer with labels."""

    layers: list[int]
    mean: np.ndarray  # (layers, K, width): each answer position's train mean
    scale: np.ndarray  # (layers, K, 1 or width): what the centred states are divided by
    weight: np.ndarray  # (layers, width)
    bias: np.ndarray  # (layers,)
    loss: list[float]  # per layer: the kept restart's final loss, consistency + confidence
    consistency: list[float]
    confidence: list[float]
    flipped: list[bool] | None = None  # per layer, after `sign_fix`: the probe was negated
    train_curve: list[float] | None = None  # per layer, after `sign_fix`: train accuracy

    def logits(self, states: np.ndarray) -> np.ndarray:
        """(layers, examples, K): w.x + b of each normalised completion (negated where the sign was flipped)."""
        x = (states - self.mean[:, None]) / self.scale[:, None]
        z = np.einsum("lnkd,ld->lnk", x, self.weight) + self.bias[:, None, None]
        if self.flipped is not None:
            z = np.where(np.array(self.flipped)[:, None, None], -z, z)
        return z

    def sign_fix(self, states: np.ndarray, labels: np.ndarray) -> int:
        """Negate each layer's probe where that gets more of these (train) labels right; returns the chosen layer's
        index in `layers` (the best train accuracy after the fix, the shallower of equals)."""
        self.flipped = None
        z = self.logits(states)
        right = (z.argmax(-1) == labels).mean(-1)
        negated = ((-z).argmax(-1) == labels).mean(-1)
        self.flipped = [bool(f) for f in negated > right]
        self.train_curve = [float(v) for v in np.maximum(right, negated)]
        return int(np.argmax(self.train_curve))


def ccs_loss(p):
    """(consistency, confidence) per leading index, from probabilities (..., examples, K): means over examples."""
    consistency = (p.sum(-1) - 1) ** 2
    confidence = (p**2).sum(-1) - p.max(-1).values ** 2  # every probability but the largest, squared
    return consistency.mean(-1), confidence.mean(-1)


def normalizer(states: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) over the examples of `states` (layers, examples, K, width), per layer and answer position."""
    mean = states.mean(1)
    centred = states - mean[:, None]
    if how == "mean":
        return mean, np.ones(mean.shape[:2] + (1,), dtype=states.dtype)
    std = centred.std(1)  # (layers, K, width)
    if how == "scale":
        std = std.mean(-1, keepdims=True)
    return mean, np.where(std > 0, std, 1.0).astype(states.dtype)  # a constant dimension stays as it is


def fit_ccs(states: np.ndarray, layers: list[int], preset: CCSPreset, seed: int) -> CCSFit:
    """CCS on `states` (layers, examples, K, width), no labels: every layer and restart trained together."""
    import torch  # loads when a probe is fit

    mean, scale = normalizer(states, preset.normalization)
    x = torch.from_numpy(np.ascontiguousarray((states - mean[:, None]) / scale[:, None], dtype=np.float32))
    n_layers, width = x.shape[0], x.shape[-1]
    # torch.nn.Linear's initialisation, as the authors' probe had; drawn per layer, so that a layer's probe does not
    # depend on which other layers are fit with it
    bound = 1 / math.sqrt(width)
    inits = [torch.rand(preset.restarts, width + 1, generator=torch.Generator().manual_seed(seed * 100_003 + layer))
             for layer in layers]  # fmt: skip
    init = (torch.stack(inits) * 2 - 1) * bound
    weight = init[..., :width].clone().requires_grad_()
    bias = init[..., width].clone().requires_grad_()
    optimizer = torch.optim.AdamW([weight, bias], lr=preset.learning_rate, weight_decay=preset.weight_decay)

    def probabilities():
        return torch.sigmoid(torch.einsum("lnkd,lrd->lrnk", x, weight) + bias[:, :, None, None])

    for _ in range(preset.epochs):
        optimizer.zero_grad()
        consistency, confidence = ccs_loss(probabilities())
        (consistency + confidence).sum().backward()  # the sum of independent losses: each restart trains alone
        optimizer.step()
    with torch.no_grad():
        consistency, confidence = ccs_loss(probabilities())
        total = consistency + confidence
        best = total.argmin(1)  # (layers,): the kept restart of each layer
        rows = torch.arange(n_layers)
        return CCSFit(
            layers=layers,
            mean=mean,
            scale=scale,
            weight=weight[rows, best].numpy().astype(np.float64),
            bias=bias[rows, best].numpy().astype(np.float64),
            loss=total[rows, best].tolist(),
            consistency=consistency[rows, best].tolist(),
            confidence=confidence[rows, best].tolist(),
        )


def choice_logprobs(logits: np.ndarray) -> np.ndarray:
    """log(p_k / sum_j p_j) with p = sigmoid(logits), over the last axis; finite however large the logits."""
    from scipy.special import log_expit, logsumexp

    logp = log_expit(logits)
    return logp - logsumexp(logp, axis=-1, keepdims=True)


# ---------------------------------------------------------------- features: the completed statements
def completed_texts(template: Template, examples: list[Example], n_choices: int) -> list[str]:
    """Each example's rendering completed with each answer choice, example-major (K texts per example)."""
    texts = []
    for ex in examples:
        context, choices = template.render(ex)
        if len(choices) != n_choices:
            raise HarnessError(
                f"ccs: template '{template.name}' gives {len(choices)} answer choices on {ex.describe()}, not the "
                f"task's {n_choices}: contrast pairs need the same answers for every example"
            )
        texts += [context + template.target_delimiter + choice for choice in choices]
    return texts


def completion_states(
    cache: FeatureCache,
    engine: Engine | None,
    model: str,
    task: str,
    template: Template,
    split: str,
    examples: list[Example],
    n_choices: int,
) -> tuple[np.ndarray, bool]:
    """((states, examples, K, width), computed): from the cache, else one pass of the model (then cached)."""
    texts = completed_texts(template, examples, n_choices)
    path = cache.path(model, task, template.name, split, "completed-last", texts)
    found = cache.load(path)
    computed = found is None or len(found) != len(texts)
    if computed:
        if engine is None:
            raise RuntimeError("features are not cached and no model was given")
        from harness.features import completion_features  # torch loads with the model

        found = completion_features(engine, texts)
        cache.save(path, found)
    array = found.reshape(len(examples), n_choices, *found.shape[1:])  # (examples, K, states, width)
    return array.transpose(2, 0, 1, 3), computed


# ---------------------------------------------------------------- one unit
def run_ccs_unit(
    unit: TrainedUnit,
    task: TaskSpec,
    prompts: PromptSet,
    engine: Engine | None,
    model: str,
    eval_examples: list[Example],
    train_examples: list[Example],
    preset: CCSPreset,
    cache: FeatureCache,
) -> tuple[list[VariantRecords], dict]:
    started = time.perf_counter()
    template = prompts.get(unit.template)
    n_choices = len(task.labels)
    # a control unit's labels are permuted: they fix the sign and pick the layer, so the check still means something
    sample, evals = trained_unit_examples(unit, train_examples, eval_examples)
    x_train, computed_train = completion_states(cache, engine, model, task.name, template, "train", sample, n_choices)
    x_eval, computed_eval = completion_states(cache, engine, model, task.name, template, "val", evals, n_choices)
    n_states = x_train.shape[0]
    layers = preset_layers(preset.layers, n_states, "ccs", model)
    fit = fit_ccs(x_train[layers], layers, preset, unit.seed)  # no labels
    chosen = fit.sign_fix(x_train[layers], np.array([e.label for e in sample]))
    logits = fit.logits(x_eval[layers])
    y_eval = np.array([e.label for e in evals])
    scores = choice_logprobs(logits[chosen])
    records = class_records(evals, scores)
    layer = layers[chosen]
    flipped = fit.flipped[chosen]
    info = {
        "ccs": f"CCS (Burns et al. 2022) on layer {layer} of {n_states - 1} (last token of template "
        f"'{template.name}' completed with each of {n_choices} answers; {preset.normalization} normalisation, "
        f"{preset.restarts} restarts of {preset.epochs} steps); fit without labels, train labels fixed the sign"
        f"{' (flipped)' if flipped else ''} and chose the layer",
        "layer": layer,
        "layers": layers,
        "loss": fit.loss[chosen],
        "consistency": fit.consistency[chosen],
        "confidence": fit.confidence[chosen],
        "sign_flipped": flipped,
        "loss_curve": fit.loss,
        "train_curve": fit.train_curve,  # after the sign fix: what chose the layer (not `cv_curve`: see report)
        "eval_curve": [float(v) for v in (logits.argmax(-1) == y_eval).mean(-1)],
        "trained_params": x_train.shape[-1] + 1,
        "random_init": is_random_init(unit.variant),
        "n_fit": len(sample),
        "features_computed": bool(computed_train or computed_eval),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return [VariantRecords(unit.stored_variant, unit.template, unit.train_size, unit.seed, records)], info


class CCS(TrainedMethod):
    name = "ccs"
    description = "Contrast-Consistent Search: an unsupervised linear probe; train labels fix its sign and layer only"
    preset_class = CCSPreset

    def not_applicable(self, spec: TaskSpec) -> str | None:
        if spec.generates:
            return f"ccs not applicable: {spec.name} has a generated answer, not answer choices to contrast"
        return None

    def run(self, unit: TrainedUnit, ctx: RunContext) -> tuple[list[VariantRecords], dict]:
        task = ctx.task
        engine, model = features_model(unit, ctx)
        outputs, info = run_ccs_unit(
            unit, task.spec, task.prompts, engine, model, task.eval_examples, task.train, task.presets[self.name],
            ctx.cache,
        )  # fmt: skip
        if is_random_init(unit.variant):
            info["random_init_seed"] = ctx.random_init_seed
        ctx.advance(self.cost(unit, task))
        return outputs, info


register(CCS())
