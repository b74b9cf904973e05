"""Run one ptune or bitfit unit: sample train, hold part out, train, score the eval examples."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.methods.base import TrainedUnit, split_holdout, trained_unit_examples
from harness.methods.presets import TrainingPreset
from harness.methods.training import train_and_score
from harness.metrics import accuracy
from harness.prompts import PromptSet
from harness.store import VariantRecords
from harness.synthetic import ANSWER_FIELDS
from harness.tasks import Example, TaskSpec


def run_tuning_unit(
    unit: TrainedUnit,
    task: TaskSpec,
    prompts: PromptSet,
    model,
    tokenizer,
    eval_examples: list[Example],
    train_examples: list[Example],
    preset: TrainingPreset,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[VariantRecords], dict]:
    started = time.perf_counter()
    template = prompts.get(unit.template)
    sample, evals = trained_unit_examples(unit, train_examples, eval_examples, ANSWER_FIELDS if task.generates else ())
    fit, held = split_holdout(sample, preset.holdout, unit.seed)
    run = train_and_score(
        model,
        tokenizer,
        unit.method,
        unit.variant,
        preset,
        template,
        task,
        fit,
        held,
        evals,
        unit.seed,
        score_held=task.generates,  # a generated answer's held-out score is exact match, as on eval
        progress=progress,
    )
    result = run.result
    if task.generates:
        result.holdout_acc = accuracy(run.held_records, task)
    info = {
        **run.detail,
        "trained_params": run.n_params,
        "n_fit": len(fit),
        "n_holdout": len(held),
        "steps_run": result.steps_run,
        "best_step": result.best_step,
        # mean loss over all the fit items at the kept (best held-out) state, from one pass after training
        "train_loss": result.train_loss,
        "holdout_loss": result.holdout_loss,
        # True: the held-out loss stopped improving for `patience` checks before max_steps / max_seconds
        "converged": result.converged,
        "stopped_by": result.stopped_by,  # patience | max_steps | max_seconds
        "holdout_acc": result.holdout_acc,
        "holdout_curve": result.curve,
        "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(run.eval_seconds, 1),
        "work": run.work,  # per phase: tokens, positions, attention pairs, head positions, passes, seconds
        "seconds": round(time.perf_counter() - started, 1),
    }
    return [VariantRecords(unit.stored_variant, unit.template, unit.train_size, unit.seed, run.records)], info
