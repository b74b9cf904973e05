"""The prompt method: many templates, k-shot demos, random- and abstract-label demos, calibration and control prompts.

Every (template, k, seed) uses ONE fixed demo set drawn from train, so all eval examples of a unit share the
same prefix, which the engine computes once. Variants:
- `gold`: demos with their true labels (k = 0 is zero-shot);
- `random_labels`: the same demos with labels drawn at random (Min et al. 2022: do demos teach the mapping?);
- `abstract_labels`: the same demos with their gold labels, each label shown as a neutral symbol ("foo", "bar"),
  and the query scored on the same symbols (Pan et al. 2023: only learning the mapping from the demos beats chance);
- `calibrated`: contextual calibration (Zhao et al. 2021) of the `gold` scores by a content-free input;
- `control`: control templates that carry no task information.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from harness.errors import HarnessError
from harness.methods.base import Method, RunContext, TaskContext, register
from harness.metrics import accuracy
from harness.prompts import PromptSet, Template
from harness.store import Record, UnitName, VariantRecords
from harness.synthetic import random_answer_fields
from harness.tasks import Example, TaskSpec

if TYPE_CHECKING:
    import torch

    from harness.config import EvalConfig
    from harness.engine import Engine, Request, Scored


@dataclass(frozen=True)
class PromptUnit:
    """One pass over the eval set. `kind`: gold (also yields `calibrated`), random_labels, abstract_labels or
    control."""

    method: ClassVar[str] = "prompt"
    template: str
    shots: int
    seed: int
    kind: str = "gold"

    @property
    def key(self) -> str:
        return str(UnitName(self.kind, self.template, f"k{self.shots}", self.seed))


def plan_units(
    prompts: PromptSet,
    shots: Sequence[int],
    seeds: int,
    templates: Sequence[str] | None,
    demo_selection: str,
    train_size: int | None,
    random_label_shots: Sequence[int] = (),
    controls: bool = True,
    abstract_label_shots: Sequence[int] = (),
) -> list[PromptUnit]:
    """All units for one task. Zero-shot and `first` demo selection need one seed only.

    Random-label units run for the k in `random_label_shots` that are also in `shots`, abstract-label units for the
    k in `abstract_label_shots` (empty where the task has no fixed label set: `abstract_labels_unavailable`);
    control templates run unless `controls` is false (--variants without control).
    """
    chosen = [prompts.get(n) for n in templates] if templates else list(prompts.templates)
    if controls:  # the baseline of the ladder: they run whatever --templates says
        chosen += [c for c in prompts.controls if c not in chosen]
    units = []
    for t in chosen:
        if t.control:
            units.append(PromptUnit(t.name, 0, 0, kind="control"))
            continue
        for k in shots:
            if k > 0 and train_size is None:
                continue  # no train split: the caller reports it
            if k > 0 and train_size is not None and k > train_size:
                raise HarnessError(
                    f"--shots {k} is larger than the train set of {prompts.task} ({train_size} examples)"
                )
            n_seeds = 1 if k == 0 or demo_selection == "first" else seeds
            units.extend(PromptUnit(t.name, k, s) for s in range(n_seeds))
            if k > 0 and k in random_label_shots:
                units.extend(PromptUnit(t.name, k, s, kind="random_labels") for s in range(n_seeds))
            if k > 0 and k in abstract_label_shots:
                units.extend(PromptUnit(t.name, k, s, kind="abstract_labels") for s in range(n_seeds))
    return units


def draw_demos(train: list[Example], k: int, seed: int, selection: str, task: str) -> list[Example]:
    """The demo set for (k, seed): the same examples for every template, so templates compare fairly."""
    if k == 0:
        return []
    if selection == "first":
        return train[:k]
    return random.Random(f"{task}/demos/k{k}/s{seed}").sample(train, k)


def random_label_seed(task: str, k: int, seed: int) -> str:
    """Seed of the random labels given to the demo set (k, seed): the same for every template."""
    return f"{task}/random-labels/k{k}/s{seed}"


# Neutral symbols that stand for the labels in abstract-label demos (the foo/bar of symbol tuning, Wei et al. 2023):
# short words with no meaning as an answer, so the label names' pretrained meaning cannot help.
ABSTRACT_SYMBOLS = ("foo", "bar", "baz", "qux", "quux", "corge", "grault", "garply", "waldo", "fred", "plugh", "thud")


def abstract_label_seed(task: str, k: int, seed: int) -> str:
    """Seed of the label -> symbol mapping of the demo set (k, seed): the same for every template."""
    return f"{task}/abstract-labels/k{k}/s{seed}"


def _symbol_pool(prompts: PromptSet, task: TaskSpec) -> list[str]:
    """ABSTRACT_SYMBOLS without any word that is an answer choice of the task's prompts or a label name."""
    taken = {c.strip().lower() for t in prompts.templates + prompts.controls if t.fixed_choices for c in t.choices}
    taken |= {label.lower() for label in task.labels}
    return [s for s in ABSTRACT_SYMBOLS if s not in taken]


def abstract_symbols(prompts: PromptSet, task: TaskSpec, k: int, seed: int) -> list[str]:
    """Label id -> its symbol in the abstract-label units of the demo set (k, seed): distinct symbols drawn from
    ABSTRACT_SYMBOLS (none of them a real answer of the task), seeded by the demo set, the same for every template."""
    return random.Random(abstract_label_seed(task.name, k, seed)).sample(_symbol_pool(prompts, task), len(task.labels))


def abstract_labels_unavailable(
    task: TaskSpec, prompts: PromptSet | None, templates: Sequence[str] | None
) -> str | None:
    """Why the abstract-label variant cannot run on a task (its note in the plan and the report); None when it can.

    It needs answers that are a fixed choice list, one choice per label, in every template the run uses
    (`templates`: --templates, None for all): a symbol then stands for the same label in every example. Where a
    template's choices are per-example texts (COPA's alternatives, an arithmetic answer) there is nothing a fixed
    symbol could replace."""
    why = f"abstract labels not run on {task.name}"
    if prompts is None or task.generates or not task.labels:
        return f"{why}: its answers are not a fixed label set"
    chosen = [prompts.get(n) for n in templates] if templates else prompts.templates
    chosen = [t for t in chosen if not t.control]
    varying = [t.name for t in chosen if not t.fixed_choices]
    if varying:
        return f"{why}: the answer choices of {', '.join(varying)} are per-example texts, not a fixed list of labels"
    uneven = [t.name for t in chosen if len(t.choices) != len(task.labels)]
    if uneven:
        return f"{why}: {', '.join(uneven)} do not have one answer choice per label ({len(task.labels)})"
    if len(_symbol_pool(prompts, task)) < len(task.labels):
        return f"{why}: {len(task.labels)} labels but only {len(_symbol_pool(prompts, task))} free symbols"
    return None


def gold_indices(example: Example, choices: list[str], template: Template) -> list[int]:
    """Indices of the correct choices: the label id, or (ReCoRD) every choice whose item is an answer."""
    if example.label is not None:
        if example.label >= len(choices):
            raise HarnessError(
                f"{template.path}: template '{template.name}' has {len(choices)} choices but label {example.label}"
            )
        return [example.label]
    answers = set(example.fields.get("answers", []))
    list_field = template.choices["for_each"]  # type: ignore[index]
    return [i for i, item in enumerate(example.fields[list_field]) if item in answers]


def _demo_text(
    template: Template, demo: Example, rng: random.Random | None, task: TaskSpec, symbols: list[str] | None = None
) -> str:
    if symbols is not None:  # abstract labels: the gold label, shown as its symbol
        text, choices = template.render(demo)
        return text + template.target_delimiter + symbols[gold_indices(demo, choices, template)[0]]
    if task.generates and rng is not None:  # a wrong answer of the right form
        text, choices = template.render(demo, random_answer_fields(task, demo.fields, rng))
        return text + template.target_delimiter + choices[0]
    text, choices = template.render(demo)
    label_ids = len(task.labels)
    if rng is None:
        gold = gold_indices(demo, choices, template)
        # ReCoRD's entities and answers are sorted, so gold[0] is its first answer, the one lm-eval shows
        answer = choices[gold[0]] if gold else choices[0]
    else:
        answer = choices[rng.randrange(label_ids or len(choices))]
    return text + template.target_delimiter + answer


def build_prefix(
    template: Template,
    prompts: PromptSet,
    demos: list[Example],
    random_labels_seed: str | None,
    task: TaskSpec,
    symbols: list[str] | None = None,
) -> str:
    """The text before every eval example's prompt: the prompt set's preamble (an lm-eval task's description),
    then each demo with its answer and the few-shot delimiter. The answer is the gold one, or a random one seeded
    by `random_labels_seed`, or with `symbols` (label id -> symbol) the gold label's symbol."""
    if not demos:
        return prompts.preamble
    rng = random.Random(random_labels_seed) if random_labels_seed else None
    parts = [_demo_text(template, d, rng, task, symbols) for d in demos]
    return prompts.preamble + prompts.fewshot_delimiter.join(parts) + prompts.fewshot_delimiter


SELECTION_SIZE = 16  # train examples outside a unit's demos that rank its template; eval data never does


def selection_examples(train: list[Example], demos: list[Example], task: str) -> list[Example]:
    """About SELECTION_SIZE train examples, in a seeded order, from questions none of the demos come from.

    Whole groups (MultiRC questions) are taken, so no demo shares its passage and question with a scored answer.
    """
    demo_groups = {d.group for d in demos}
    by_group: dict[str, list[Example]] = {}
    for e in train:
        if e.group not in demo_groups:
            by_group.setdefault(e.group, []).append(e)
    order = sorted(by_group)
    random.Random(f"{task}/selection").shuffle(order)
    chosen: list[Example] = []
    for group in order:
        if len(chosen) >= SELECTION_SIZE:
            break
        chosen += by_group[group]
    return chosen


def _requests(
    template: Template, prefix: str, examples: list[Example], symbols: list[str] | None = None
) -> tuple[list[Request], list[list[str]]]:
    """Each example's request and its answer choices; with `symbols`, choice i is scored as symbol i."""
    from harness.engine import Request  # torch loads with the engine

    rendered = [template.render(ex) for ex in examples]
    if symbols is not None:
        rendered = [(text, list(symbols)) for text, _ in rendered]
    requests = [Request(prefix + text, [template.target_delimiter + c for c in choices]) for text, choices in rendered]
    return requests, [choices for _, choices in rendered]


def _content_free_request(template: Template, prompts: PromptSet, prefix: str, base: Example) -> Request:
    """The content-free input of contextual calibration: `base` with the task's content fields blanked."""
    from harness.engine import Request

    cf_text, cf_choices = template.render(base, {**base.fields, **prompts.content_free})
    return Request(prefix + cf_text, [template.target_delimiter + c for c in cf_choices])


def _record(example: Example, scored: Scored, choices: list[str], gold: list[int], keep_texts: bool) -> Record:
    return Record(
        example_id=example.id,
        group=example.group,
        gold=gold,
        logprobs=scored.logprobs,
        n_tokens=scored.n_tokens,
        n_chars=[len(c) for c in choices],
        valid_mass=scored.valid_mass,
        top1_valid=scored.top1_valid,
        gold_rank=min(((scored.content_ranks or scored.first_token_ranks)[g] for g in gold), default=None),
        choice_texts=list(choices_items(example, choices)) if keep_texts else None,
        gold_texts=sorted(example.fields.get("answers", [])) if keep_texts else None,
    )


def choices_items(example: Example, choices: list[str]) -> list[str]:
    """The text a metric compares for each choice: the entity for ReCoRD, else the choice itself."""
    return list(example.fields["entities"]) if "entities" in example.fields else choices


def calibrate(record: Record, content_free: list[float]) -> Record:
    """Contextual calibration: p(y|x) / p(y|content-free), renormalised over the choices, as log-probabilities."""
    scores = [lp - cf for lp, cf in zip(_normalise(record.logprobs), _normalise(content_free))]
    return Record(
        example_id=record.example_id,
        group=record.group,
        gold=record.gold,
        logprobs=_normalise(scores),
        n_chars=record.n_chars,
    )


def _normalise(logprobs: list[float]) -> list[float]:
    top = max(logprobs)
    log_z = top + math.log(sum(math.exp(x - top) for x in logprobs))
    return [x - log_z for x in logprobs]


@dataclass
class Scoring:
    """One list of requests a prompt unit scores (its eval examples, or the train examples that score its prompt for
    template selection) and what reading the scores back needs."""

    examples: list[Example]
    requests: list[Request]  # one per example, then the content-free input where `calibrated`
    choices: list[list[str]]
    golds: list[list[int]]
    calibrated: bool


def _scoring(
    template: Template, prompts: PromptSet, prefix: str, examples: list[Example], calibrated: bool, base: Example,
    symbols: list[str] | None = None,
) -> Scoring:  # fmt: skip
    requests, all_choices = _requests(template, prefix, examples, symbols)
    golds = [gold_indices(ex, choices, template) for ex, choices in zip(examples, all_choices)]
    if calibrated:
        requests.append(_content_free_request(template, prompts, prefix, base))
    return Scoring(examples, requests, all_choices, golds, calibrated)


def unit_scoring(
    unit: PromptUnit,
    task: TaskSpec,
    prompts: PromptSet,
    eval_examples: list[Example],
    train: list[Example] | None,
    demo_selection: str,
    calibrated: bool = True,
    content_free_base: Example | None = None,
) -> Scoring:
    """The requests of a unit's eval examples (`run_unit`'s arguments)."""
    template = prompts.get(unit.template)
    demos = draw_demos(train or [], unit.shots, unit.seed, demo_selection, task.name)
    symbols = abstract_symbols(prompts, task, unit.shots, unit.seed) if unit.kind == "abstract_labels" else None
    if unit.kind == "random_labels":
        prefix = build_prefix(template, prompts, demos, random_label_seed(task.name, unit.shots, unit.seed), task)
    else:
        prefix = build_prefix(template, prompts, demos, None, task, symbols)
    calibrate_gold = calibrated and calibratable(unit, prompts)
    base = content_free_base or eval_examples[0]
    return _scoring(template, prompts, prefix, eval_examples, calibrate_gold, base, symbols)


def unit_outputs(
    unit: PromptUnit, task: TaskSpec, engine: Engine, scoring: Scoring, scored: list[Scored]
) -> list[VariantRecords]:
    """The records of each variant a unit yields, from the scores of its `unit_scoring` requests."""
    records = _records(task, engine, scoring, scored, keep_texts="f1" in task.metrics)  # f1: answers as texts
    outputs = [VariantRecords(unit.kind, unit.template, unit.shots, unit.seed, records)]
    if scoring.calibrated:
        calibrated = [calibrate(r, scored[-1].logprobs) for r in records]
        outputs.append(VariantRecords("calibrated", unit.template, unit.shots, unit.seed, calibrated))
    return outputs


def _records(task: TaskSpec, engine: Engine, scoring: Scoring, scored: list[Scored], keep_texts: bool) -> list[Record]:
    records = [
        _record(ex, s, choices, gold, keep_texts)
        for ex, s, choices, gold in zip(scoring.examples, scored, scoring.choices, scoring.golds)
    ]
    _add_generated(task, engine, scoring.requests, scoring.choices, records)
    return records


def run_unit(
    unit: PromptUnit,
    task: TaskSpec,
    prompts: PromptSet,
    engine: Engine,
    eval_examples: list[Example],
    train: list[Example] | None,
    demo_selection: str,
    progress: Callable[[int], None] | None = None,
    hidden_layers: Sequence[int] = (),
    hidden_sink: list | None = None,
    calibrated: bool = True,
    content_free_base: Example | None = None,
) -> list[VariantRecords]:
    """Score one unit; returns the records of each variant it yields.

    With `hidden_layers`, the hidden states at each eval example's answer slot (the last token of its prompt)
    are appended to `hidden_sink` as (layers, width) arrays, from the same forward pass. `content_free_base`: the
    example whose content fields calibration blanks (default: the first of `eval_examples`; a sampled design passes
    the eval set's first, so every template calibrates on the same input).
    """
    scoring = unit_scoring(unit, task, prompts, eval_examples, train, demo_selection, calibrated, content_free_base)
    scored = engine.score(
        scoring.requests, hidden_layers=hidden_layers, progress=progress, content_ranks=task.generates
    )
    if hidden_sink is not None:
        for s in scored[: len(eval_examples)]:
            hidden_sink.append(np.stack([s.hidden[layer].numpy() for layer in hidden_layers]))
    return unit_outputs(unit, task, engine, scoring, scored)


def selection_scoring(
    unit: PromptUnit,
    task: TaskSpec,
    prompts: PromptSet,
    content_free_base: Example,
    train: list[Example] | None,
    demo_selection: str,
) -> Scoring | None:
    """The requests that score a gold unit's prompt on train examples (`score_selection`); None when it has none.
    `content_free_base`: the example whose content fields calibration blanks (a run passes its eval set's first)."""
    if unit.kind != "gold" or not train:
        return None
    template = prompts.get(unit.template)
    demos = draw_demos(train, unit.shots, unit.seed, demo_selection, task.name)
    examples = selection_examples(train, demos, task.name)
    if not examples:
        return None
    prefix = build_prefix(template, prompts, demos, None, task)
    calibrated = prompts.content_free is not None and template.fixed_choices
    return _scoring(template, prompts, prefix, examples, calibrated, content_free_base)


def selection_result(task: TaskSpec, engine: Engine, scoring: Scoring, scored: list[Scored]) -> dict:
    """{"n", "acc"} and, where calibrated, "calibrated_acc" of a `selection_scoring`'s scores."""
    records = _records(task, engine, scoring, scored, keep_texts=False)
    out = {"n": len(records), "acc": accuracy(records, task)}
    if scoring.calibrated:
        out["calibrated_acc"] = accuracy([calibrate(r, scored[-1].logprobs) for r in records], task)
    return out


def score_selection(
    unit: PromptUnit,
    task: TaskSpec,
    prompts: PromptSet,
    engine: Engine,
    content_free_base: Example,
    train: list[Example] | None,
    demo_selection: str,
    progress: Callable[[int], None] | None = None,
) -> dict | None:
    """Accuracy of a gold unit's prompt (same template, same demos) on train examples outside its demos.

    This is what picks the best template and k for the decomposition, so that eval data is never used for a
    choice. Returns {"n", "acc"} and, where the unit is also calibrated, "calibrated_acc"; None when there is
    nothing to score on. `content_free_base`: the example whose content fields calibration blanks.
    """
    scoring = selection_scoring(unit, task, prompts, content_free_base, train, demo_selection)
    if scoring is None:
        return None
    scored = engine.score(scoring.requests, progress=progress, content_ranks=task.generates)
    return selection_result(task, engine, scoring, scored)


def add_generated(
    engine: Engine,
    contexts: Sequence[str],
    all_choices: Sequence[Sequence[str]],
    records: list[Record],
    max_new_tokens: int,
    stop: Sequence[str] = ("\n",),
    soft_prompt: Callable[[int], torch.Tensor | None] | None = None,
) -> None:
    """Generated-answer tasks: each record gets the greedy output of its context (cut at the first of `stop`) and
    the text of its gold answer (`all_choices[i][record.gold[0]]`), which exact match compares. `soft_prompt`: a
    trained soft prompt before every context (harness/methods/training.py's scorer)."""
    outputs = engine.generate(list(contexts), max_new_tokens, soft_prompt=soft_prompt, stop=stop)
    for record, output, choices in zip(records, outputs, all_choices):
        record.generated, record.gold_texts = output, [choices[record.gold[0]]]


def _add_generated(
    task: TaskSpec, engine: Engine, requests: list[Request], all_choices: list[list[str]], records: list[Record]
) -> None:
    """`add_generated` for the prompt method's records (the requests' contexts), where the task generates."""
    if task.generates:
        contexts = [r.context for r in requests[: len(records)]]
        add_generated(engine, contexts, all_choices, records, task.max_new_tokens, task.stop)


# ---------------------------------------------------------------- the method: plan, cost and run in `harness eval`
def random_label_shots(cfg: EvalConfig) -> list[int]:
    """The k that get random-label (and abstract-label) demos: as asked, else the largest k (where the report reads
    them)."""
    if cfg.random_label_shots is not None:
        return cfg.random_label_shots
    return [max(cfg.shots)]  # validate() has rejected an empty --shots


def unit_examples(task: TaskContext, unit: PromptUnit) -> list[Example]:
    """The eval examples a unit scores: all of them, except under --design sampled, where a gold or random-label
    unit scores its template's share of the eval set (harness/design.py; whole groups, e.g. MultiRC questions).

    The assignment is seeded by the task and spans the prompt file's templates (not --templates), so a unit scores
    the same examples whichever templates a command runs; random- and abstract-label units share their gold unit's
    examples."""
    cfg = task.cfg
    if cfg.design != "sampled" or unit.kind == "control" or task.prompts is None:
        return task.eval_examples
    from harness.design import assigned_examples

    templates = [t.name for t in task.prompts.templates if not t.control]
    groups = list(dict.fromkeys(e.group for e in task.eval_examples))
    keep = set(assigned_examples(groups, templates, cfg.template_share, seed=task.spec.name)[unit.template])
    return [e for e in task.eval_examples if e.group in keep]


def calibratable(unit: PromptUnit, prompts: PromptSet | None) -> bool:
    """A gold unit whose template has fixed choices and whose prompt file has a content-free input."""
    if unit.kind != "gold" or prompts is None or prompts.content_free is None:
        return False
    return prompts.get(unit.template).fixed_choices


def wants_selection(task: TaskContext, unit: PromptUnit) -> bool:
    """Gold prompts at k = 0 and the largest k get train scores: the decomposition picks among these (unless
    --no-train-picks)."""
    cfg = task.cfg
    return cfg.train_picks and unit.kind == "gold" and bool(task.train) and unit.shots in (0, max(cfg.shots))


def selection_cost(task: TaskContext) -> int:
    return len(selection_examples(task.train or [], [], task.spec.name)) + 1


def train_scores(unit: PromptUnit, ctx: RunContext) -> dict | None:
    """`score_selection` of a unit in a run (also for a unit an older version stored without them)."""
    task = ctx.task
    return score_selection(
        unit, task.spec, task.prompts, ctx.engine, task.eval_examples[0], task.train, task.cfg.demo_selection,
        ctx.advance,
    )  # fmt: skip


class Prompt(Method):
    name = "prompt"
    description = "many templates, k-shot demos, random-label demos, calibration, control prompts"

    def plan(self, task: TaskContext) -> list[PromptUnit]:
        cfg = task.cfg
        if task.spec.answer == "read":  # the presidents list: one pass, no templates or demos
            return [PromptUnit("list", 0, 0)]
        train_size = len(task.train) if task.train is not None else None
        abstract = "abstract_labels" in cfg.variants
        abstract = abstract and abstract_labels_unavailable(task.spec, task.prompts, cfg.templates) is None
        return plan_units(
            task.prompts,
            cfg.shots,
            cfg.seeds,
            cfg.templates,
            cfg.demo_selection,
            train_size,
            random_label_shots(cfg) if "random_labels" in cfg.variants else (),
            controls="control" in cfg.variants,
            abstract_label_shots=random_label_shots(cfg) if abstract else (),
        )

    def cost(self, unit: PromptUnit, task: TaskContext) -> int:
        """Eval requests, the content-free request of a calibrated unit, and the train examples that score a prompt
        for template selection."""
        calibrated = "calibrated" in task.cfg.variants and calibratable(unit, task.prompts)
        selection = selection_cost(task) if wants_selection(task, unit) else 0
        return len(unit_examples(task, unit)) + int(calibrated) + selection

    def run(self, unit: PromptUnit, ctx: RunContext) -> tuple[list[VariantRecords], dict]:
        """A prompt unit; when it scores the probe's template zero-shot, the probe's eval features come from the
        same forward pass (the hidden states at its answer slot are the last token's)."""
        task = ctx.task
        if task.spec.answer == "read":
            from harness.presidents import read_list

            records = read_list(ctx.engine, task.eval_examples)
            ctx.advance(len(records))
            return [VariantRecords("gold", unit.template, 0, 0, records)], {"variants": ["gold"]}
        from harness.features import n_states

        examples = unit_examples(task, unit)
        share = shares_features(task, unit)
        sink: list | None = [] if share else None
        outputs = run_unit(
            unit,
            task.spec,
            task.prompts,
            ctx.engine,
            examples,
            task.train,
            task.cfg.demo_selection,
            progress=ctx.advance,
            hidden_sink=sink,
            hidden_layers=list(range(n_states(ctx.engine.model))) if share else (),
            calibrated="calibrated" in task.cfg.variants,
            content_free_base=task.eval_examples[0],
        )
        if share:
            from harness.methods.probe import probe_texts

            template = task.prompts.get(unit.template)
            texts = probe_texts(template, task.eval_examples)
            ctx.cache.save(
                ctx.cache.path(ctx.model, task.spec.name, template.name, "val", "last", texts), np.stack(sink)
            )
        info: dict = {"variants": [o.variant for o in outputs]}
        if wants_selection(task, unit):
            info["selection"] = train_scores(unit, ctx)
        return outputs, info


def shares_features(task: TaskContext, unit: PromptUnit) -> bool:
    """Does this unit score the probe's template zero-shot on every eval example? Then its pass also gives the
    probe's eval features (the hidden states at the answer slot are the last token's)."""
    probe = task.presets.get("probe")
    return (
        len(unit_examples(task, unit)) == len(task.eval_examples)
        and probe is not None
        and probe.pooling == "last"
        and unit.template == probe.template
        and unit.shots == 0
        and unit.kind in ("control", "gold")
    )


# ---------------------------------------------------------------- small units, scored together
# A unit with fewer requests than this (CB's 56 val examples, COPA's 100, a control template) runs in a group with
# the small units after it, until the group has this many: their rows fill batches together and their prefixes are
# computed once. A kill loses the group in flight, so it stays a few minutes of CPU work at most.
GROUP_REQUESTS = 512


def groupable(task: TaskContext, unit: PromptUnit) -> bool:
    """A small prompt unit that needs nothing but its scores (not the presidents list, not the probe's features)."""
    if task.spec.answer == "read" or shares_features(task, unit):
        return False
    return PROMPT.cost(unit, task) < GROUP_REQUESTS


def run_group(
    units: Sequence[PromptUnit],
    ctx: RunContext,
    done: Callable[[PromptUnit, list[VariantRecords], dict], None],
    pack: bool = False,
) -> None:
    """Score several `groupable` units of one task in one engine call (Engine.score_lists): each unit's eval
    requests and its train scores are lists of the call, a prefix they share runs once, and with `pack` their rows
    share batches. `done(unit, outputs, info)` gets each unit, with what `Prompt.run` returns for it, as soon as all
    its requests are scored."""
    task, engine = ctx.task, ctx.engine
    lists: list[Scoring] = []
    owner: list[tuple[int, str]] = []  # per list: its unit's index and what it is ("eval" or "selection")
    selections: dict[int, dict | None] = {}
    for u, unit in enumerate(units):
        lists.append(
            unit_scoring(
                unit,
                task.spec,
                task.prompts,
                unit_examples(task, unit),
                task.train,
                task.cfg.demo_selection,
                calibrated="calibrated" in task.cfg.variants,
                content_free_base=task.eval_examples[0],
            )
        )
        owner.append((u, "eval"))
        if wants_selection(task, unit):
            selections[u] = None  # stays None where there is nothing to score on, as `score_selection` says
            scoring = selection_scoring(
                unit, task.spec, task.prompts, task.eval_examples[0], task.train, task.cfg.demo_selection
            )
            if scoring is not None:
                lists.append(scoring)
                owner.append((u, "selection"))
    lists_left = [sum(o[0] == u for o in owner) for u in range(len(units))]
    outputs: dict[int, list[VariantRecords]] = {}

    def list_done(i: int, scored: list[Scored]) -> None:
        u, what = owner[i]
        if what == "eval":
            outputs[u] = unit_outputs(units[u], task.spec, engine, lists[i], scored)
        else:
            selections[u] = selection_result(task.spec, engine, lists[i], scored)
        lists_left[u] -= 1
        if lists_left[u] == 0:
            info: dict = {"variants": [o.variant for o in outputs[u]]}
            if u in selections:
                info["selection"] = selections[u]
            done(units[u], outputs.pop(u), info)

    engine.score_lists(
        [scoring.requests for scoring in lists],
        progress=ctx.advance,
        content_ranks=task.spec.generates,
        on_list_done=list_done,
        pack=pack,
    )


PROMPT = Prompt()
register(PROMPT)
