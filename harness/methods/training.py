"""What the tuned methods (ptune, bitfit) share: choice scoring with gradients, and a training loop with held-out
early stopping. (Train samples, the held-out split and control labels, which the probe shares too, are in base.py.)

Every trained method scores an example the way the prompt method does: the log-likelihood of each answer choice
after the rendered template (lm-evaluation-harness tokenization), so its outputs are per-example choice scores
like every other method's. Training minimises cross-entropy over those scores (objective `choices`), or the
negative log-likelihood of the gold answer's tokens (objective `lm`, for generated answers).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from harness.engine import Engine, Work, _expand_cache, causal_pairs, counted, slot_diagnostics
from harness.errors import HarnessError
from harness.methods.base import get_method
from harness.methods.presets import TrainingPreset
from harness.methods.prompt import add_generated, gold_indices
from harness.prompts import Template
from harness.store import Record
from harness.tasks import Example, TaskSpec

# Bounds the padded positions of one scoring batch (forward, or forward + backward when training): activation
# memory for backward is about 1.3 MB per position on SmolLM2-135M, so 1024 keeps training well under 4 GB.
TRAIN_BATCH_POSITIONS = 1024
# A row shorter than this share of its batch's longest row starts a new batch (bounds the padding computed).
PAD_SLACK = 0.75


# ---------------------------------------------------------------- scoring with gradients
@dataclass
class _Item:
    choices: list[str]
    gold: list[int]
    ctx: list[int]
    conts: list[list[int]]


@dataclass
class ChoiceScores:
    logprobs: torch.Tensor  # (n_choices,) summed log-likelihood of each choice
    slot: torch.Tensor  # (vocab,) log-probabilities at the answer slot (detached)
    n_tokens: list[int] = field(default_factory=list)
    content_ranks: list[int] | None = None  # with ChoiceScorer.content_ranks: see Engine.score


class ChoiceScorer:
    """Log-likelihoods of answer choices under a model that may carry a soft prompt or trained biases.

    Rows are right-padded (causal attention never lets a real position see the pads after it) and the output
    head is applied only at the answer positions. `prompt(batch)` returns soft-prompt embeddings to put before
    every row, or None. `work` counts what each phase (`phase`) ran through the model and its wall time.

    Without gradients (held-out checks, eval) the soft prompt's keys and values are computed once per call and
    shared by every row (`cache_prompt`), as the engine shares a demo prefix: the same scores up to float rounding
    (the tests check 1e-5 nats), and on a 20-token prompt before RTE's ~70-token rows about a fifth less work.
    """

    cache_prompt = True

    def __init__(self, model, tokenizer, prompt: Callable[[int], torch.Tensor | None] | None = None):
        self.model = model
        self.engine = Engine(model, tokenizer)  # tokenization rules and the output head
        self.decoder = model.get_decoder()
        self.embed = model.get_input_embeddings()
        self.prompt = prompt or (lambda batch: None)
        self.device = self.engine.device  # where the input embeddings compute (one of several, with --device-map)
        self.content_ranks = False  # generated answers: rank the first non-space token (Engine.score)
        self.work: dict[str, Work] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the passes inside the block (and its wall time) under `name`."""
        with counted(self.engine, self.work.setdefault(name, Work())):
            yield

    def items(self, template: Template, examples: Sequence[Example]) -> list[_Item]:
        out = []
        for ex in examples:
            text, choices = template.render(ex)
            pairs = [self.engine.encode_pair(text, template.target_delimiter + c) for c in choices]
            gold = gold_indices(ex, choices, template)
            out.append(_Item(choices, gold, pairs[0][0], [p[1] for p in pairs]))
        return out

    def score(self, items: Sequence[_Item]) -> list[ChoiceScores]:
        """Scores of every item; differentiable when grad is enabled."""
        rows = []  # (item index, tokens, ctx_len, choices scored from the row)
        for i, it in enumerate(items):
            if _one_row(it):  # choices that differ only in their last token are all read from one row
                rows.append((i, it.ctx + it.conts[0][:-1], len(it.ctx), list(range(len(it.conts)))))
            else:
                rows.extend((i, it.ctx + c, len(it.ctx), [j]) for j, c in enumerate(it.conts))
        width = max(len(r[1]) for r in rows)
        ids = torch.full((len(rows), width), self.engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, (_, tokens, _, _) in enumerate(rows):
            ids[b, : len(tokens)] = torch.tensor(tokens)
            mask[b, : len(tokens)] = 1
        embeds = self.embed(ids.to(self.device))
        cached = self.cache_prompt and not torch.is_grad_enabled()
        prompt = self.prompt(1 if cached else len(rows))
        kwargs, n_virtual, offset = {}, 0, 0  # offset: the prompt's positions in `hidden` (none when cached)
        if prompt is not None:
            n_virtual = prompt.shape[1]
            prompt = prompt.to(embeds.dtype)
            mask = torch.cat([torch.ones((len(rows), n_virtual), dtype=torch.long), mask], dim=1)
            if cached:
                past = self.decoder(inputs_embeds=prompt, use_cache=True).past_key_values
                self.engine._count(n_virtual, n_virtual, causal_pairs(0, n_virtual))
                kwargs = {"past_key_values": _expand_cache(past, len(rows)), "use_cache": True}
            else:
                embeds, offset = torch.cat([prompt.expand(len(rows), -1, -1), embeds], dim=1), n_virtual
        out = self.decoder(inputs_embeds=embeds, attention_mask=mask.to(self.device), **kwargs)
        hidden = out.last_hidden_state

        gather_b, gather_t, spans = [], [], []
        for b, (i, _, ctx_len, choices) in enumerate(rows):
            first, n = offset + ctx_len - 1, len(items[i].conts[choices[0]])  # a row's choices have one length
            spans.append((len(gather_b), n))
            gather_b.extend([b] * n)
            gather_t.extend(range(first, first + n))
        logp = self.engine._log_probs(hidden[gather_b, gather_t])
        lengths = [len(r[1]) for r in rows]
        pairs = sum(causal_pairs(n_virtual, n) + causal_pairs(0, offset) for n in lengths)
        self.engine._count(sum(lengths) + len(rows) * offset, len(rows) * (offset + width), pairs, len(gather_b))

        per_item: list[list[torch.Tensor | None]] = [[None] * len(it.conts) for it in items]
        ranks: list[list[int] | None] = [[0] * len(it.conts) if self.content_ranks else None for it in items]
        slots: list[torch.Tensor | None] = [None] * len(items)
        for b, (i, _, _, choices) in enumerate(rows):
            start, n = spans[b]
            row_logp = logp[start : start + n]
            for j in choices:
                cont = items[i].conts[j]
                per_item[i][j] = row_logp[torch.arange(n), torch.tensor(cont)].sum()
                if self.content_ranks:
                    ranks[i][j] = self.engine.content_rank(row_logp.detach(), cont)
            if slots[i] is None:
                slots[i] = row_logp[0].detach()
        return [
            ChoiceScores(torch.stack(per_item[i]), slots[i], [len(c) for c in it.conts], ranks[i])
            for i, it in enumerate(items)
        ]

    def batches(self, items: Sequence[_Item], max_items: int) -> list[list[int]]:
        """Indices of `items` in batches of similar length: at most `max_items` items, TRAIN_BATCH_POSITIONS padded
        positions, and no row padded by more than a quarter of the batch width. Batches are the unit of a forward
        pass, not of an optimiser step (a step's items are split into these and their gradients accumulated), so
        cutting on length changes no result, only the padding computed: 1.5x faster on RTE's mixed lengths."""

        def shape(it: _Item) -> tuple[int, int]:  # (rows, longest row)
            if _one_row(it):
                return 1, len(it.ctx) + len(it.conts[0]) - 1
            return len(it.conts), len(it.ctx) + max(len(c) for c in it.conts)

        order = sorted(range(len(items)), key=lambda i: -shape(items[i])[1])  # longest first: memory peaks early
        out: list[list[int]] = []
        current: list[int] = []
        rows = width = 0
        for i in order:
            n, length = shape(items[i])
            if current and (
                len(current) >= max_items or (rows + n) * width > TRAIN_BATCH_POSITIONS or length < PAD_SLACK * width
            ):
                out.append(current)
                current, rows = [], 0
            if not current:
                width = length
            current.append(i)
            rows += n
        if current:
            out.append(current)
        return out


def _one_row(it: _Item) -> bool:
    """All choices have the same tokens but the last one (one-token choices; MultiRC's '... correct? yes/no')."""
    n, head = len(it.conts[0]), it.conts[0][:-1]
    return all(len(c) == n and c[:-1] == head for c in it.conts)


def loss_of(scores: list[ChoiceScores], items: Sequence[_Item], objective: str) -> torch.Tensor:
    """Mean loss over items. `choices`: cross-entropy over the choices; `lm`: NLL of the (first) gold answer."""
    losses = []
    for s, it in zip(scores, items):
        gold = it.gold[0]
        if objective == "lm":
            losses.append(-s.logprobs[gold] / max(1, s.n_tokens[gold]))
        else:
            losses.append(-torch.log_softmax(s.logprobs, dim=0)[gold])
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- training loop
STOPPED_BY = ("patience", "max_steps", "max_seconds")


@dataclass
class TrainResult:
    steps_run: int
    best_step: int
    holdout_loss: float
    holdout_acc: float
    seconds: float
    curve: list[tuple[int, float, float]]  # (step, held-out loss, held-out accuracy)
    train_loss: float = float("nan")  # mean loss over all the fit items at the kept state (one no-grad pass)
    stopped_by: str = "max_steps"  # patience | max_steps | max_seconds
    converged: bool = False  # stopped by patience: the held-out loss stopped improving before either cap


def unit_converged(info: dict) -> bool | None:
    """Whether a stored ptune/bitfit unit trained to convergence (its held-out loss stopped improving for the
    patience window before max_steps or max_seconds); None where the info records no convergence (a store made
    before it was recorded, or a probe unit)."""
    value = info.get("converged") if isinstance(info, dict) else None
    return None if value is None else bool(value)


def _evaluate(scorer: ChoiceScorer, items: list[_Item], objective: str, batch_size: int) -> tuple[float, float]:
    total_loss, correct = 0.0, 0
    with torch.no_grad(), scorer.phase("checks"):
        for indices in scorer.batches(items, batch_size):
            batch = [items[i] for i in indices]
            scores = scorer.score(batch)
            total_loss += float(loss_of(scores, batch, objective)) * len(batch)
            correct += sum(int(torch.argmax(s.logprobs)) in it.gold for s, it in zip(scores, batch))
    return total_loss / len(items), correct / len(items)


def train(
    scorer: ChoiceScorer,
    params: list[torch.nn.Parameter],
    fit: list[_Item],
    held: list[_Item],
    preset: TrainingPreset,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """AdamW at a constant learning rate on `params` until the held-out loss stops improving.

    The held-out loss is checked every `eval_every` steps; the run stops (`patience`, converged) after `patience`
    checks without a better one, and the state with the best held-out loss is kept. Two caps end a run that has
    not converged: `max_steps` optimiser steps and `max_seconds` of wall time (checked after each step; the
    held-out loss is checked once more at the cap, so the kept state considers the last step). With no `held`
    items nothing can converge: it runs to a cap and keeps the last state (a brief phase on a few examples,
    where a held-out split would leave too few to fit)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(f"batches/{seed}")
    opt = torch.optim.AdamW(params, lr=preset.learning_rate, weight_decay=0.0)
    objective, batch_size = preset.objective, preset.batch_size
    max_steps, max_seconds = preset.max_steps, preset.max_seconds
    loss, acc = _evaluate(scorer, held, objective, batch_size) if held else (float("nan"), float("nan"))
    best = (loss, 0, acc, [p.detach().clone() for p in params])
    curve = [(0, loss, acc)]
    order: list[int] = []
    checks_without_gain, step, stopped_by = 0, 0, "max_steps"
    for step in range(1, max_steps + 1):
        if len(order) < batch_size:
            order += rng.sample(range(len(fit)), len(fit))
        batch = [fit[i] for i in order[:batch_size]]
        del order[:batch_size]
        with scorer.phase("train"):
            opt.zero_grad(set_to_none=True)
            for indices in scorer.batches(batch, batch_size):
                chunk = [batch[i] for i in indices]
                chunk_loss = loss_of(scorer.score(chunk), chunk, objective) * len(chunk) / len(batch)
                chunk_loss.backward()
            opt.step()
        if progress:
            progress(1)
        out_of_time = max_seconds is not None and time.perf_counter() - started >= max_seconds
        if held and (step % preset.eval_every == 0 or step == max_steps or out_of_time):
            loss, acc = _evaluate(scorer, held, objective, batch_size)
            curve.append((step, loss, acc))
            if loss < best[0] - 1e-6:
                best = (loss, step, acc, [p.detach().clone() for p in params])
                checks_without_gain = 0
            else:
                checks_without_gain += 1
                if checks_without_gain >= preset.patience:
                    stopped_by = "patience"
                    break
        if out_of_time:
            stopped_by = "max_seconds"
            break
    if held:
        with torch.no_grad():
            for p, kept in zip(params, best[3]):
                p.copy_(kept)
        best_step, loss, acc = best[1], best[0], best[2]
    else:
        best_step = step
    train_loss = _evaluate(scorer, fit, objective, batch_size)[0] if fit else float("nan")
    return TrainResult(
        step,
        best_step,
        loss,
        acc,
        time.perf_counter() - started,
        curve,
        train_loss,
        stopped_by,
        bool(held) and stopped_by == "patience",
    )


def predict_records(scorer: ChoiceScorer, items: list[_Item], examples: list[Example], batch_size: int) -> list[Record]:
    """Records of the eval examples under the trained model: choice scores plus the attempt diagnostics."""
    records: list[Record | None] = [None] * len(items)
    with torch.no_grad():
        for indices in scorer.batches(items, batch_size):
            for i, s in zip(indices, scorer.score([items[i] for i in indices])):
                it, ex = items[i], examples[i]
                diag = slot_diagnostics(s.slot, it.conts)
                records[i] = Record(
                    example_id=ex.id,
                    group=ex.group,
                    gold=it.gold,
                    logprobs=[float(x) for x in s.logprobs],
                    n_tokens=s.n_tokens,
                    n_chars=[len(c) for c in it.choices],
                    valid_mass=diag.valid_mass,
                    top1_valid=diag.top1_valid,
                    gold_rank=min(((s.content_ranks or diag.first_ranks)[g] for g in it.gold), default=None),
                )
    return records


def score_examples(
    scorer: ChoiceScorer,
    template: Template,
    examples: list[Example],
    batch_size: int,
    max_new_tokens: int = 0,
    stop: Sequence[str] = ("\n",),
) -> list[Record]:
    """Records of `examples` under the current trained state; with `max_new_tokens` (a generated answer) each also
    gets its greedy output (cut at the first of `stop`), scored by exact match as the prompt method scores it."""
    records = predict_records(scorer, scorer.items(template, examples), examples, batch_size)
    if max_new_tokens:
        rendered = [template.render(ex) for ex in examples]
        texts, all_choices = [text for text, _ in rendered], [choices for _, choices in rendered]
        add_generated(scorer.engine, texts, all_choices, records, max_new_tokens, stop, scorer.prompt)
    return records


def fit_items(scorer: ChoiceScorer, template: Template, examples: list[Example]) -> list[_Item]:
    items = scorer.items(template, examples)
    for it, ex in zip(items, examples):
        if not it.gold:
            raise HarnessError(f"train example {ex.id} has no gold answer among the template's choices")
    return items


def trained_parameter_count(params: list[torch.nn.Parameter]) -> int:
    return int(sum(p.numel() for p in params))


# ---------------------------------------------------------------- one run: train, then score
@dataclass
class TrainedRun:
    """What `train_and_score` gives back."""

    result: TrainResult
    records: list[Record]  # of the eval examples, under the kept state
    held_records: list[Record]  # of the held-out examples, where asked (score_held)
    state: list[torch.Tensor]  # the kept trainable parameters, on the CPU
    detail: dict  # what the method says of its trainable state
    n_params: int
    eval_seconds: float
    # per phase (train: forward + backward steps; checks: held-out checks and the fit-loss pass; eval: scoring the
    # eval and held-out records), what ran through the model and its seconds: Work.as_dict()
    work: dict[str, dict] = field(default_factory=dict)


def train_and_score(
    model,
    tokenizer,
    method: str,
    variant: str,
    preset: TrainingPreset,
    template: Template,
    task: TaskSpec,
    fit: list[Example],
    held: list[Example],
    evals: list[Example],
    seed: int,
    start: list[torch.Tensor] | None = None,
    score_held: bool = False,
    progress: Callable[[int], None] | None = None,
) -> TrainedRun:
    """Train a ptune or bitfit state on `fit` (a fresh one, or `start`, a state saved before), keeping the state
    with the best loss on `held` (with no `held`, the last), then score `evals` under it (and `held`, where
    `score_held`). A generated answer trains on its tokens and is scored by greedy output and exact match, as the
    prompt method scores it. The model is restored after. Used by `harness eval` (methods/tuning.py) and
    `harness transfer`."""
    if task.generates:  # one answer to generate: train on its tokens (a softmax over one choice has no gradient)
        preset = replace(preset, objective="lm")
    generate = task.max_new_tokens if task.generates else 0
    trainable = get_method(method).trainable(model, tokenizer, variant, preset, template, seed)
    with trainable as (prompt, params, detail):
        if start is not None:
            with torch.no_grad():
                for p, saved in zip(params, start, strict=True):
                    p.copy_(saved.to(p.device, p.dtype))
        scorer = ChoiceScorer(model, tokenizer, prompt)
        scorer.content_ranks = task.generates
        fit_items_, held_items = fit_items(scorer, template, fit), fit_items(scorer, template, held)
        result = train(scorer, params, fit_items_, held_items, preset, seed, progress)
        scored = time.perf_counter()
        batch_size = preset.batch_size
        with scorer.phase("eval"):
            records = score_examples(scorer, template, evals, batch_size, generate, task.stop) if evals else []
            held_records = score_examples(scorer, template, held, batch_size, generate, task.stop) if score_held else []
        eval_seconds = time.perf_counter() - scored
        state = [p.detach().cpu().clone() for p in params]
        n_params = trained_parameter_count(params)
    work = {name: w.as_dict() for name, w in scorer.work.items()}
    return TrainedRun(result, records, held_records, state, detail, n_params, eval_seconds, work)
