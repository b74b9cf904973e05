"""Run one ptune or bitfit unit: sample train, hold part out, train, score the eval examples."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.methods.training import (
    ChoiceScorer,
    TrainedUnit,
    control_examples,
    fit_items,
    score_examples,
    split_holdout,
    train,
    train_sample,
    trainable,
    trained_parameter_count,
)
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
    preset: dict,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[VariantRecords], dict]:
    started = time.perf_counter()
    template = prompts.get(unit.template)
    sample = train_sample(train_examples, unit.train_size, unit.seed)
    evals = eval_examples
    answers = ANSWER_FIELDS if task.generates else ()
    if unit.control:
        sample = control_examples(sample, unit.seed, "train", answers)
        evals = control_examples(eval_examples, unit.seed, "eval", answers)
    fit, held = split_holdout(sample, preset["holdout"], unit.seed)
    if task.generates:  # one answer to generate: train on its tokens (a softmax over one choice has no gradient)
        preset = {**preset, "objective": "lm"}

    with trainable(model, tokenizer, unit.method, unit.variant, preset, template, unit.seed) as (
        prompt,
        params,
        detail,
    ):
        scorer = ChoiceScorer(model, tokenizer, prompt)
        scorer.content_ranks = task.generates
        result = train(
            scorer,
            params,
            fit_items(scorer, template, fit),
            fit_items(scorer, template, held),
            preset,
            unit.seed,
            progress,
        )
        scored = time.perf_counter()
        # generated answers are scored as the prompt method scores them: greedy output, exact match
        generate = task.max_new_tokens if task.generates else 0
        records = score_examples(scorer, template, evals, preset["batch_size"], generate, task.stop)
        if task.generates:
            held_records = score_examples(scorer, template, held, preset["batch_size"], generate, task.stop)
            result.holdout_acc = accuracy(held_records, task)
        eval_seconds = time.perf_counter() - scored
        n_params = trained_parameter_count(params)
    info = {
        **detail,
        "trained_params": n_params,
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
        "eval_seconds": round(eval_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return [VariantRecords(unit.stored_variant, unit.template, unit.train_size, unit.seed, records)], info
