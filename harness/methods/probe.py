"""Linear probes: logistic regression (scikit-learn) on frozen hidden states of every layer.

Features are the states at the last token of a neutral rendering of the example (the `input-only` control
template by default: the example's fields and no question), or their mean over its tokens. The layer is chosen
by cross-validation on the train sample only; the unit's info keeps the per-layer accuracy curves (cross-validated
on train, and on eval for the report's plot; eval never chooses anything).

The unit's info also keeps the online (prequential) codelength of the train labels at the chosen layer (MDL
probing, Voita & Titov 2020): `mdl_bits`, against the uniform code's `uniform_bits`, and their ratio
`compression`. The random-init baseline (variant `probe-random-init`) is the same probe on a re-initialised copy
of the model, so its codelength and accuracy say what the architecture alone gives.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

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
class ProbePreset(Preset):
    """probes/probe.yaml: which hidden states are read, and the logistic regression fit on them."""

    pooling: Literal["last", "mean"] = setting("last: the last token of the rendering; mean: mean over its tokens")
    layers: Literal["all"] | list[int] = setting("all, or a list of layer indices (0 = embeddings)")
    C: float = setting("inverse L2 strength of the logistic regression", positive=True)
    max_iter: int = setting("the solver's iteration cap", positive=True)
    cv_folds: int = setting("folds of the cross-validation on train that chooses the layer", at_least=2)


def probe_texts(template: Template, examples: list[Example]) -> list[str]:
    return [template.render(ex)[0] for ex in examples]


def features(
    cache: FeatureCache,
    engine: Engine | None,
    model: str,
    task: str,
    template: Template,
    split: str,
    pooling: str,
    examples: list[Example],
) -> tuple[np.ndarray, bool]:
    """(features, computed): from the cache, else from one pass of the model (then cached)."""
    texts = probe_texts(template, examples)
    path = cache.path(model, task, template.name, split, pooling, texts)
    found = cache.load(path)
    if found is not None and len(found) == len(examples):
        return found, False
    if engine is None:
        raise RuntimeError("features are not cached and no model was given")
    from harness.features import last_token_features, mean_pooled_features  # torch loads with the model

    if pooling == "last":
        _, choices = template.render(examples[0])
        array = last_token_features(engine, texts, [template.target_delimiter + c for c in choices])
    else:
        array = mean_pooled_features(engine, texts)
    cache.save(path, array)
    return array, True


def _counted(
    work: dict[str, dict], phase: str, engine: Engine | None, compute: Callable[[], tuple[np.ndarray, bool]]
) -> tuple[np.ndarray, bool]:
    """`compute()` (a split's `features`); where the model runs, `work[phase]` gets what it computed and its seconds."""
    if engine is None:
        return compute()
    from harness.engine import Work, counted  # torch: loaded with the model already

    counts = Work()
    with counted(engine, counts):
        out = compute()
    if out[1]:
        work[phase] = counts.as_dict()
    return out


def _pipeline(preset: ProbePreset) -> object:
    from sklearn.linear_model import LogisticRegression  # scikit-learn loads when a probe is fit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=preset.C, max_iter=preset.max_iter))


def _folds(y: np.ndarray, groups: list[str], k: int, seed: int):
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    counts = np.bincount(y)
    smallest = counts[counts > 0].min()
    if smallest >= 2 and len(counts[counts > 0]) > 1:
        return StratifiedGroupKFold(n_splits=min(k, smallest), shuffle=True, random_state=seed).split(y, y, groups)
    return GroupKFold(n_splits=min(k, len(set(groups)))).split(y, y, groups)


def fit_predict(preset: ProbePreset, x: np.ndarray, y: np.ndarray, x_eval: np.ndarray, n_classes: int) -> np.ndarray:
    """Log-probabilities (eval, classes); a class never seen in training gets a tiny probability."""
    from scipy.special import log_softmax
    from sklearn.exceptions import ConvergenceWarning

    out = np.full((len(x_eval), n_classes), np.log(1e-9))
    if len(set(y.tolist())) == 1:
        out[:, y[0]] = 0.0
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _pipeline(preset).fit(x, y)
    # log-softmax of the decision function: predict_log_proba's log(predict_proba) gives -inf once a probability
    # underflows to 0 (well separated features), and a record's scores must stay finite
    logits = model.decision_function(x_eval)
    if logits.ndim == 1:  # binary: the decision function is the logit of classes_[1]
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    out[:, model.classes_] = log_softmax(logits, axis=1)
    return out


def cv_accuracy(
    preset: ProbePreset, x: np.ndarray, y: np.ndarray, groups: list[str], seed: int, n_classes: int
) -> float:
    correct = 0
    for train_idx, test_idx in _folds(y, groups, preset.cv_folds, seed):
        pred = fit_predict(preset, x[train_idx], y[train_idx], x[test_idx], n_classes).argmax(1)
        correct += int((pred == y[test_idx]).sum())
    return correct / len(y)


def choose_layer(
    preset: ProbePreset,
    x: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    seed: int,
    n_classes: int,
    layers: list[int],
) -> tuple[int, list[float]]:
    """(the layer with the best cross-validated accuracy on (x, y), the curve over `layers`); x is (examples,
    states, width). Ties go to the first: the shallower layer."""
    cv_curve = [cv_accuracy(preset, x[:, layer], y, groups, seed, n_classes) for layer in layers]
    return layers[int(np.argmax(cv_curve))], cv_curve


def mdl_blocks(n: int) -> list[int]:
    """Block ends of the online code: 2, 4, 8, ... and n (Voita & Titov's 0.1%, 0.2%, ... adapted to small n)."""
    ends, end = [], 2
    while end < n:
        ends.append(end)
        end *= 2
    return ends + [n]


def online_codelength(preset: ProbePreset, x: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> dict:
    """MDL of the labels given the features, online code (Voita & Titov 2020), in bits.

    The examples are shuffled (seeded); the first block is sent with the uniform code, each next block with a
    probe fitted on all blocks before it (-log2 p(gold) summed). While only one class has been seen, the
    block is coded with the Laplace estimate of the labels seen so far (a probe cannot be fitted)."""
    order = list(range(len(y)))
    random.Random(f"mdl/{seed}").shuffle(order)
    x, y = x[order], y[order]
    ends = mdl_blocks(len(y))
    uniform = len(y) * math.log2(n_classes)
    bits = ends[0] * math.log2(n_classes)
    for start, end in zip(ends, ends[1:]):
        seen = y[:start]
        if len(set(seen.tolist())) < 2:
            counts = np.bincount(seen, minlength=n_classes) + 1.0
            logp = np.log(np.tile(counts / counts.sum(), (end - start, 1)))
        else:
            logp = fit_predict(preset, x[:start], seen, x[start:end], n_classes)
        bits += float(-logp[np.arange(end - start), y[start:end]].sum() / math.log(2))
    return {
        "mdl_bits": bits,
        "uniform_bits": uniform,
        "compression": uniform / bits if bits > 0 else float("inf"),
        "mdl_blocks": ends,
    }


def run_probe_unit(
    unit: TrainedUnit,
    task: TaskSpec,
    prompts: PromptSet,
    engine: Engine | None,
    model: str,
    eval_examples: list[Example],
    train_examples: list[Example],
    preset: ProbePreset,
    cache: FeatureCache,
) -> tuple[list[VariantRecords], dict]:
    started = time.perf_counter()
    template = prompts.get(unit.template)
    n_classes = len(task.labels)
    sample, evals = trained_unit_examples(unit, train_examples, eval_examples)
    pooling = preset.pooling
    # Features depend on the inputs only, so task and control share them (and all seeds share eval's).
    work: dict[str, dict] = {}
    x_train, computed_train = _counted(
        work, "train", engine, lambda: features(cache, engine, model, task.name, template, "train", pooling, sample)
    )
    x_eval, computed_eval = _counted(
        work, "eval", engine, lambda: features(cache, engine, model, task.name, template, "val", pooling, evals)
    )
    fitting = time.perf_counter()
    y = np.array([e.label for e in sample])
    y_eval = np.array([e.label for e in evals])
    layers = preset_layers(preset.layers, x_train.shape[1], "probe", model)
    best, cv_curve = choose_layer(preset, x_train, y, [e.group for e in sample], unit.seed, n_classes, layers)
    eval_curve = []
    for layer in layers:
        logp = fit_predict(preset, x_train[:, layer], y, x_eval[:, layer], n_classes)
        eval_curve.append(float((logp.argmax(1) == y_eval).mean()))
        if layer == best:
            chosen = logp
    records = class_records(evals, chosen)
    width = x_train.shape[2]
    info = {
        "probe": f"logistic regression on layer {best} of {x_train.shape[1] - 1} ({preset.pooling} token(s) of "
        f"template '{template.name}'), chosen by {preset.cv_folds}-fold CV on train",
        "layer": best,
        "layers": layers,
        "cv_curve": cv_curve,
        "eval_curve": eval_curve,
        "trained_params": (width + 1) * (n_classes if n_classes > 2 else 1),
        **online_codelength(preset, x_train[:, best], y, n_classes, unit.seed),
        "random_init": is_random_init(unit.variant),
        "n_fit": len(sample),
        "features_computed": bool(computed_train or computed_eval),
        # the feature passes that ran (train sample, eval examples): tokens, attention pairs, ..., seconds
        "work": work,
        "fit_seconds": round(time.perf_counter() - fitting, 1),  # the logistic regressions, layer choice and MDL
        "seconds": round(time.perf_counter() - started, 1),
    }
    return [VariantRecords(unit.stored_variant, unit.template, unit.train_size, unit.seed, records)], info


class Probe(TrainedMethod):
    name = "probe"
    description = "logistic-regression probes on every layer's hidden states, layer chosen by CV on train"
    preset_class = ProbePreset

    def not_applicable(self, spec: TaskSpec) -> str | None:
        if spec.generates:
            return (
                f"probe not applicable: {spec.name} has a generated answer, not a class label to probe for "
                "(an arithmetic task's -parity variant, e.g. add-2d-parity, gives the probe the parity of the answer)"
            )
        return None

    def run(self, unit: TrainedUnit, ctx: RunContext) -> tuple[list[VariantRecords], dict]:
        task = ctx.task
        engine, model = features_model(unit, ctx)
        outputs, info = run_probe_unit(
            unit, task.spec, task.prompts, engine, model, task.eval_examples, task.train, task.presets[self.name],
            ctx.cache,
        )  # fmt: skip
        ctx.advance(self.cost(unit, task))
        return outputs, info


register(Probe())
