"""Scoring engine: log-likelihoods of answer choices, with shared work done once.

A *unit* is a list of requests that share a prompt prefix (one demo set per template, shots and seed).
The engine
- tokenizes like lm-evaluation-harness (context alone, then context+continuation, continuation = the tail),
- runs the longest token prefix common to every row of the unit once and reuses its key/value cache,
- scores choices that differ only in their last token from one row (one pass per example for yes/no tasks),
- applies the output head only at the answer positions;
- with `$HARNESS_PREFIX_ATTENTION=shared`, attends the rows of a batch that share a prefix to ONE copy of its
  keys/values (`harness/prefix_attention.py`): no per-row copy of the prefix cache, one matmul per layer and KV
  head for all rows' queries; the softmax over prefix and new keys is merged exactly. The default, expand, gives
  each row a view of the prefix cache through transformers' cache (the reference the tests compare): on 2 CPU
  cores the shared path measured within +-6% of it (benchmarks/prefix_attention.py), so it stays opt-in until it
  pays off; models, caches or configs the shared path has not been checked on take the expand path;
- scores several units' lists of requests in one call (`score_lists`): identical prefixes run once; with `pack`, a
  list's prefix continues an earlier list's cache where they start alike, and the part-filled last batches of
  different prefixes share one pass, their caches left-padded and stacked.
Only identical token prefixes are shared, so scores equal a plain full-sequence pass (tests check 1e-4 nats).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import torch

from harness.prefix_attention import prefix_attention_mode, shared_prefix, supports_model, use_shared_prefix_attention

# Shorter common prefixes are not worth a separate pass.
MIN_SHARED_PREFIX = 8
MIN_GROUP_PREFIX = 16


@dataclass
class Request:
    """Score each continuation after the context. The context ends at the answer slot."""

    context: str
    continuations: Sequence[str]


@dataclass
class Scored:
    """What the engine returns for one request."""

    logprobs: list[float]  # summed log-likelihood of each continuation
    n_tokens: list[int]  # tokens in each continuation
    first_token_ids: list[int]
    first_token_ranks: list[int]  # 1-based rank of each continuation's first token in the full vocabulary
    valid_mass: float  # probability of the distinct first tokens of all continuations at the answer slot
    top1_token_id: int  # unconstrained most likely next token at the answer slot
    top1_valid: bool  # does that token start one of the continuations?
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> hidden state at the answer slot
    # with `content_ranks`: rank of each continuation's first non-space token, given the tokens before it
    content_ranks: list[int] | None = None


@dataclass
class Work:
    """What model passes computed, and (where a phase is timed) how long they took: the counters that benchmarks turn
    into FLOPs (benchmarks/trained_methods.py). Soft-prompt tokens count as tokens."""

    tokens: int = 0  # real positions run through the decoder
    positions: int = 0  # positions computed, padding included
    pairs: int = 0  # causal (query, key) pairs among real positions, cached keys included: attention's work
    head: int = 0  # positions the output head was applied at
    passes: int = 0  # decoder calls
    seconds: float = 0.0

    def add(self, other: Work, sign: int = 1) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + sign * getattr(other, f.name))

    def as_dict(self) -> dict:
        return {f.name: round(getattr(self, f.name), 3) for f in fields(self)}


@contextmanager
def counted(engine: Engine, into: Work) -> Iterator[None]:
    """Add to `into` what `engine` computes inside the block, and the block's wall time."""
    before = copy.copy(engine.work)
    started = time.perf_counter()
    try:
        yield
    finally:
        into.add(engine.work)
        into.add(before, -1)
        into.seconds += time.perf_counter() - started


def causal_pairs(cached: int, new: int) -> int:
    """(query, key) pairs of `new` positions after `cached` ones, each attending to itself and all before it."""
    return new * cached + new * (new + 1) // 2


@dataclass
class _Row:
    request: int
    tokens: list[int]
    ctx_len: int
    choices: list[int]  # continuation indices scored from this row
    start: int = 0  # tokens of the row that `cache` holds; the batch runs the rest
    cache: object = None  # key/value cache of the row's first `start` tokens (batch 1), None when start == 0


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (lm-eval's postprocess_generated_text)."""
    for s in stop:
        if s:
            text = text.split(s, 1)[0]
    return text


class Engine:
    """Scores requests with a causal LM. `batch_size=None` picks one from the sequence lengths."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        prefix_attention: str | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # A model placed across devices (--device-map) takes its inputs where its embeddings compute and gives its
        # logits where its head does; every tensor read back from it is moved before use.
        self.device = execution_device(model, model.get_input_embeddings())
        self.max_batch_tokens = max_batch_tokens or _default_batch_tokens(self.device)
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.head_device = execution_device(model, self.head)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        # lm-eval's rule for an empty context: condition on BOS (or EOS when there is none).
        self.prefix_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.prefix_token_id
        self._encode_cache: dict[str, list[int]] = {}
        self.work = Work()  # what every pass computed, for benchmarks (`counted` times a phase of it)
        self._content_ranks = False
        # shared or expand (`prefix_attention`, else $HARNESS_PREFIX_ATTENTION); shared only where checked
        self.prefix_attention = prefix_attention_mode(prefix_attention)
        self._shared_prefix = self.prefix_attention == "shared" and supports_model(self.decoder)

    # ---- tokenization (lm-evaluation-harness rules) ----
    def _encode(self, text: str) -> list[int]:
        ids = self._encode_cache.get(text)
        if ids is None:
            ids = self.tokenizer.encode(text)
            if len(self._encode_cache) < 100_000:
                self._encode_cache[text] = ids
        return ids

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation token ids exactly as lm-eval's HFLM forms them."""
        return self.encode_pairs([(context, continuation)])[0]

    def encode_pairs(self, items: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """`encode_pair` of many (context, continuation) pairs, the texts tokenized in batches (the tokenizer's
        threads; one call, not one per text: on a GPU, tokenizing 5-shot contexts one at a time outlasted the
        forward passes). Every text is tokenized as `tokenizer.encode` would alone, so the ids are the same."""
        split = []
        for context, continuation in items:
            if not context:
                split.append((None, continuation))
                continue
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:  # trailing spaces belong to the continuation, as in lm-eval
                continuation = context[-n_spaces:] + continuation
                context = context[:-n_spaces]
            split.append((context, continuation))
        new_contexts = list(dict.fromkeys(c for c, _ in split if c is not None and c not in self._encode_cache))
        fresh = dict(zip(new_contexts, self._encode_many(new_contexts)))  # read below even when the cache is full
        for text, ids in fresh.items():
            if len(self._encode_cache) < 100_000:
                self._encode_cache[text] = ids
        texts = [continuation if context is None else context + continuation for context, continuation in split]
        out = []
        for (context, _), whole in zip(split, self._encode_many(texts)):
            if context is None:
                out.append(([self.prefix_token_id], whole))
            else:
                context_ids = fresh[context] if context in fresh else self._encode(context)
                out.append((context_ids, whole[len(context_ids) :]))
        return out

    def _encode_many(self, texts: list[str]) -> list[list[int]]:
        if len(texts) < 2:
            return [self.tokenizer.encode(t) for t in texts]
        return list(self.tokenizer(texts)["input_ids"])

    def _rows(self, requests: Sequence[Request]) -> tuple[list[_Row], list[list[list[int]]]]:
        rows: list[_Row] = []
        all_conts: list[list[list[int]]] = []
        for r, req in enumerate(requests):
            if not req.continuations:
                raise ValueError(f"request {r} has no continuations")
        encoded = iter(self.encode_pairs([(req.context, c) for req in requests for c in req.continuations]))
        for r, req in enumerate(requests):
            pairs = [next(encoded) for _ in req.continuations]
            conts = [p[1] for p in pairs]
            for i, cont in enumerate(conts):
                if not cont:
                    raise ValueError(f"continuation {req.continuations[i]!r} has no tokens")
            all_conts.append(conts)
            # A row scores every choice whose tokens, all but the last, lie along it.
            request_rows: list[_Row] = []
            for i in sorted(range(len(conts)), key=lambda i: -len(conts[i])):
                ctx = pairs[i][0]
                for row in request_rows:
                    tail = row.tokens[row.ctx_len :]
                    if (
                        row.ctx_len == len(ctx)
                        and len(conts[i]) <= len(tail)
                        and tail[: len(conts[i]) - 1] == conts[i][:-1]
                    ):
                        if row.tokens[: row.ctx_len] == ctx:
                            row.choices.append(i)
                            break
                else:
                    request_rows.append(_Row(r, ctx + conts[i], len(ctx), [i]))
            rows.extend(request_rows)
        return rows, all_conts

    # ---- model passes ----
    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden.to(self.head_device)).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return torch.log_softmax(logits, dim=-1)

    @torch.no_grad()
    def score(
        self,
        requests: Sequence[Request],
        hidden_layers: Sequence[int] = (),
        progress: Callable[[int], None] | None = None,
        content_ranks: bool = False,
    ) -> list[Scored]:
        """Score every continuation of every request; `progress(n)` is called as requests finish.

        `content_ranks` also ranks each continuation's first token that is not white space (tokenizers that split
        " 52" into " ", "5", "2" make the first token's rank say nothing about the answer)."""
        return self.score_lists([requests], hidden_layers, progress, content_ranks)[0]

    @torch.no_grad()
    def score_lists(
        self,
        lists: Sequence[Sequence[Request]],
        hidden_layers: Sequence[int] = (),
        progress: Callable[[int], None] | None = None,
        content_ranks: bool = False,
        on_list_done: Callable[[int, list[Scored]], None] | None = None,
        pack: bool = False,
    ) -> list[list[Scored]]:
        """`score` for several lists of requests (several units) in one call.

        Each list keeps its own prefix, the longest common to its rows, as `score` alone would run it, and lists
        with identical prefixes share one key/value cache; each list's batches are those `score` would run, so the
        scores are bit for bit `score`'s. With `pack`, lists also share passes: a prefix that starts like an earlier
        list's continues that one's cache, rows of lists with the same prefix share batches, and the last,
        part-filled batches of different prefixes are packed into one where the budget allows, their prefixes
        left-padded into one cache; scores then differ from `score`'s by float rounding of other batch shapes (as
        another --batch-size does). `on_list_done(i, scored)` is called as soon as every request of list i is
        scored, so a caller can store that list before the rest end.
        """
        self._content_ranks = content_ranks
        owner = [i for i, requests in enumerate(lists) for _ in requests]
        rows, all_conts = self._rows([r for requests in lists for r in requests])
        rows_of: list[list[_Row]] = [[] for _ in lists]
        for row in rows:
            rows_of[owner[row.request]].append(row)
        prefixes = []
        for list_rows in rows_of:
            shared = min([_common_prefix_len([r.tokens for r in list_rows])] + [r.ctx_len - 1 for r in list_rows])
            prefixes.append(list_rows[0].tokens[:shared] if list_rows and shared >= MIN_SHARED_PREFIX else [])
        caches = self._prefix_caches(prefixes, continue_earlier=pack)

        results: list[dict] = [{"logprobs": [0.0] * len(conts), "hidden": {}} for conts in all_conts]
        rows_left = [0] * len(owner)
        for row in rows:
            rows_left[row.request] += 1
        requests_left = [len(requests) for requests in lists]
        first_request = [sum(len(r) for r in lists[:i]) for i in range(len(lists))]
        out: list[list[Scored] | None] = [None] * len(lists)

        def list_done(i: int) -> None:
            start = first_request[i]
            out[i] = [_scored(results[r], all_conts[r]) for r in range(start, start + len(lists[i]))]
            if on_list_done:
                on_list_done(i, out[i])

        def finish(batch: list[_Row]) -> None:
            done = 0
            for row in batch:
                rows_left[row.request] -= 1
                if rows_left[row.request] == 0:
                    done += 1
                    requests_left[owner[row.request]] -= 1
                    if requests_left[owner[row.request]] == 0:
                        list_done(owner[row.request])
            if progress and done:
                progress(done)

        for i in range(len(lists)):
            if not lists[i]:
                list_done(i)
        singles: list[_Row] = []
        for list_rows, prefix, cache in zip(rows_of, prefixes, caches):
            shared = len(prefix)
            groups, list_singles = _group_rows(list_rows, shared)
            for group_len, members in groups:
                # Rows sharing a long prefix beyond the list's (a MultiRC paragraph, the context of several choices):
                # run that prefix once, then only the rows' tails.
                ids = torch.tensor([members[0].tokens[shared:group_len]], device=self.device)
                past = _expand_cache(cache, 1) if cache is not None else None
                group_cache = self.decoder(input_ids=ids, past_key_values=past, use_cache=True).past_key_values
                self._count(ids.shape[1], ids.shape[1], causal_pairs(shared, ids.shape[1]))
                for row in members:
                    row.start, row.cache = group_len, group_cache
                for batch in self._batches(sorted(members, key=lambda r: -len(r.tokens))):
                    self._score_batch(batch, all_conts, results, hidden_layers)
                    finish(batch)
            for row in list_singles:
                row.start, row.cache = shared, cache
            singles += list_singles
        mixable = pack and all(c is None or _mixable(c) for c in caches)
        for batch in self._pack(singles, owner, pack, mixable):
            self._score_batch(batch, all_conts, results, hidden_layers)
            finish(batch)
        return out  # type: ignore[return-value]

    def _prefix_caches(self, prefixes: list[list[int]], continue_earlier: bool = True) -> list:
        """The key/value cache of each prefix (None for an empty one). A prefix equal to an earlier one gets that
        cache; with `continue_earlier`, one that shares at least MIN_SHARED_PREFIX tokens with an earlier one runs
        only the rest, after a view of that one's cache cut to the common part."""
        caches: list = []
        for i, prefix in enumerate(prefixes):
            if not prefix:
                caches.append(None)
                continue
            common, base = 0, None
            for j in range(i):
                n = _common_prefix_len([prefix, prefixes[j]])
                if n > common:
                    common, base = n, j
            if base is not None and common == len(prefix) == len(prefixes[base]):
                caches.append(caches[base])
                continue
            past = None
            if continue_earlier and base is not None and common >= MIN_SHARED_PREFIX and _mixable(caches[base]):
                past = _slice_cache(caches[base], common)
            else:
                common = 0
            if common == len(prefix):
                caches.append(past)
                continue
            ids = torch.tensor([prefix[common:]], device=self.device)
            caches.append(self.decoder(input_ids=ids, past_key_values=past, use_cache=True).past_key_values)
            self._count(ids.shape[1], ids.shape[1], causal_pairs(common, ids.shape[1]))
        return caches

    @torch.no_grad()
    def generate(
        self,
        contexts: Sequence[str],
        max_new_tokens: int,
        progress: Callable[[int], None] | None = None,
        batch_size: int = 16,
        soft_prompt: Callable[[int], torch.Tensor | None] | None = None,
        stop: Sequence[str] = ("\n",),
    ) -> list[str]:
        """Greedy continuations of each context, cut at the first of the `stop` strings (the stop rule of generated
        answers: the first newline, or an lm-eval task's `until`).

        Decoding also stops at the end-of-text token or after `max_new_tokens`. Contexts are tokenized as
        `score` tokenizes them, and left-padded in batches of similar length. `soft_prompt(batch)` gives
        embeddings to put before every context (a trained soft prompt), as the trained methods' scorer does.
        """
        encoded = [self._encode(c) if c else [self.prefix_token_id] for c in contexts]
        order = sorted(range(len(contexts)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(contexts)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[b, width - len(encoded[i]) :] = 1
            prompt = soft_prompt(len(batch)) if soft_prompt else None
            texts = self._greedy(ids.to(self.device), mask.to(self.device), max_new_tokens, prompt, stop)
            for b, i in enumerate(batch):
                out[i] = texts[b]
            if progress:
                progress(len(batch))
        return out

    def _greedy(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        max_new_tokens: int,
        prompt: torch.Tensor | None = None,
        stop: Sequence[str] = ("\n",),
    ) -> list[str]:
        """Greedy decoding with a key/value cache; a row is done at a stop string or the end-of-text token."""
        eos = self.tokenizer.eos_token_id
        stop = tuple(s for s in stop if s)  # lm-eval ignores an empty stop string
        newline = stop == ("\n",)  # the usual rule, checked on the new token alone
        first = {"input_ids": ids}
        if prompt is not None:  # [virtual tokens][left pads][context]: the mask skips the pads, positions too
            embeds = self.model.get_input_embeddings()(ids)
            first = {"inputs_embeds": torch.cat([prompt.to(embeds.dtype), embeds], dim=1)}
            mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, prompt.shape[1]), mask], dim=1)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(**first, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
        lengths = mask.sum(-1).tolist()
        self._count(sum(lengths), mask.numel(), sum(causal_pairs(0, n) for n in lengths), len(ids))
        tokens: list[list[int]] = [[] for _ in range(len(ids))]
        done = [False] * len(ids)
        for _ in range(max_new_tokens):
            next_ids = out.logits[:, -1].argmax(-1)
            for b, token in enumerate(next_ids.tolist()):
                if done[b]:
                    continue
                if token == eos:
                    done[b] = True
                    continue
                tokens[b].append(token)
                if newline:
                    done[b] = "\n" in self.tokenizer.decode([token])
                else:  # a stop string may span tokens: look at the whole output so far
                    done[b] = any(s in self.tokenizer.decode(tokens[b]) for s in stop)
            if all(done):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position[:, -1:] + 1
            out = self.model(
                input_ids=next_ids[:, None],
                attention_mask=mask,
                position_ids=position,
                past_key_values=out.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
            lengths = [n + 1 for n in lengths]
            self._count(len(ids), len(ids), sum(lengths), len(ids))
        return [cut_at_stop(self.tokenizer.decode(t, skip_special_tokens=True), stop) for t in tokens]

    def content_rank(self, logp: torch.Tensor, cont: list[int]) -> int:
        """Full-vocabulary rank of `cont`'s first token that is not white space; logp[j] predicts cont[j]."""
        j = next((k for k, t in enumerate(cont) if self.tokenizer.decode([t]).strip()), 0)
        return int((logp[j] > logp[j, cont[j]]).sum().item()) + 1

    @property
    def tokens_computed(self) -> int:
        return self.work.tokens

    @property
    def positions_computed(self) -> int:
        return self.work.positions

    def _count(self, tokens: int, positions: int, pairs: int, head: int = 0) -> None:
        self.work.add(Work(tokens, positions, pairs, head, passes=1))

    def _batches(self, rows: list[_Row]):
        """Rows (longest first) cut into batches of `batch_size` rows, or of about `max_batch_tokens` tokens whose
        rows are each at least MIN_FILL of the first's length: a budget that holds every row (a GPU's) would pad them
        all to the longest (RTE at k = 0 on an H200: 3.05 positions computed per token)."""
        i = 0
        while i < len(rows):
            longest = max(1, len(rows[i].tokens) - rows[i].start)
            size = self.batch_size or max(1, self.max_batch_tokens // longest)
            if not self.batch_size:
                end = i + 1
                while end < min(len(rows), i + size) and len(rows[end].tokens) - rows[end].start >= MIN_FILL * longest:
                    end += 1
                size = end - i
            yield rows[i : i + size]
            i += size

    def _pack(self, rows: list[_Row], owner: list[int], across_lists: bool, mixable: bool) -> list[list[_Row]]:
        """Batches of rows: those with the same cache (and, unless `across_lists`, of the same list) together,
        longest first, as `_batches` cuts them. Where the caches allow (`mixable`), the last batch of each cache,
        part filled, joins another's when the two fit the budget together, counting each row as its padded prefix
        plus the longest tail (the stacked cache is not a view): never more batches than one cache at a time would
        run. Caches run in the order they come, a joint batch as soon as the last of its caches has run its full
        batches, so the first lists end first."""
        by_cache: dict[tuple[int, int], list[_Row]] = {}
        for row in rows:
            by_cache.setdefault((id(row.cache), -1 if across_lists else owner[row.request]), []).append(row)
        order, tails = [], []  # (when it runs, batch)
        for k, members in enumerate(by_cache.values()):
            batches = list(self._batches(sorted(members, key=lambda r: -len(r.tokens))))
            order += [((k, 0), batch) for batch in batches[:-1]]
            tails.append((k, batches[-1]))
        packed: list[tuple[int, list[_Row]]] = []
        for k, tail in sorted(tails, key=lambda t: len(t[1]), reverse=True):  # first fit, largest first
            for p, (ready, batch) in enumerate(packed):
                if mixable and self._fits(batch + tail):
                    packed[p] = (max(ready, k), batch + tail)
                    break
            else:
                packed.append((k, list(tail)))
        order += [((ready, 1), batch) for ready, batch in packed]
        return [batch for _, batch in sorted(order, key=lambda item: item[0])]

    def _fits(self, batch: list[_Row]) -> bool:
        if self.batch_size:
            return len(batch) <= self.batch_size
        width = max(r.start for r in batch) + max(len(r.tokens) - r.start for r in batch)
        return len(batch) * width <= self.max_batch_tokens

    def _score_batch(self, batch: list[_Row], all_conts, results, hidden_layers) -> None:
        """Score rows whose first `row.start` tokens are in `row.cache` (batch-1 caches; None when start is 0)."""
        width = max(len(row.tokens) - row.start for row in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        for b, row in enumerate(batch):
            suffix = row.tokens[row.start :]
            ids[b, : len(suffix)] = torch.tensor(suffix)
        # Right padding: causal attention never lets a real position see the pads after it.
        kwargs: dict = {"input_ids": ids.to(self.device)}
        cache = batch[0].cache
        prefix = None
        if all(row.cache is cache for row in batch):  # one prefix: all rows attend to one copy of it
            prefix = shared_prefix(cache, batch[0].start) if self._shared_prefix and cache is not None else None
            if prefix is not None:  # no cache: positions go on from the prefix's, its keys reach each layer
                positions = torch.arange(prefix.length, prefix.length + width, device=self.device)[None, :]
                kwargs.update(position_ids=positions, use_cache=False, harness_prefix=prefix)
            else:  # a view of the prefix cache for every row
                kwargs["use_cache"] = cache is not None
                if cache is not None:
                    kwargs["past_key_values"] = _expand_cache(cache, len(batch))
        else:  # several prefixes, left-padded into one cache: the mask hides the pads, positions go on from each
            starts = [row.start for row in batch]
            pad = max(starts)
            mask = torch.ones((len(batch), pad + width), dtype=torch.long)
            for b, start in enumerate(starts):
                mask[b, : pad - start] = 0
            positions = torch.tensor(starts)[:, None] + torch.arange(width)[None, :]
            kwargs["past_key_values"] = _stack_caches([row.cache for row in batch], starts)
            kwargs.update(attention_mask=mask.to(self.device), position_ids=positions.to(self.device), use_cache=True)
        if hidden_layers:
            kwargs["output_hidden_states"] = True
        if prefix is not None:
            with use_shared_prefix_attention(self.decoder):
                out = self.decoder(**kwargs)
        else:
            out = self.decoder(**kwargs)
        n_new = [len(row.tokens) - row.start for row in batch]
        pairs = sum(causal_pairs(row.start, n) for row, n in zip(batch, n_new))
        hidden = out.last_hidden_state

        # Gather the answer positions of all rows, apply the head once.
        gather_b, gather_t, spans = [], [], []
        for b, row in enumerate(batch):
            first = row.ctx_len - 1 - row.start  # position predicting the first answer token
            last = len(row.tokens) - 2 - row.start
            spans.append((len(gather_b), last - first + 1))
            gather_b.extend([b] * (last - first + 1))
            gather_t.extend(range(first, last + 1))
        # Read back once: every per-row read below is then on the host (on a GPU, one small copy and sync per
        # choice, rank and mass outlasted the forward pass at k = 0). The same float32 values either way.
        logp = self._log_probs(hidden[gather_b, gather_t]).cpu()
        self._count(sum(n_new), ids.numel(), pairs, len(gather_b))
        # the hidden states at every row's answer slot, one read-back per layer (copies: a view would keep the
        # batch's states at every position alive, gigabytes on a long run); each layer where it computed
        slots = torch.tensor([row.ctx_len - 1 - row.start for row in batch])
        states = {}
        for layer in hidden_layers:
            h = out.hidden_states[layer]
            states[layer] = h[torch.arange(len(batch), device=h.device), slots.to(h.device)].float().cpu()

        for b, row in enumerate(batch):
            start, n = spans[b]
            row_logp = logp[start : start + n]
            res = results[row.request]
            conts = all_conts[row.request]
            tail = row.tokens[row.ctx_len :]
            token_lp = row_logp[torch.arange(len(tail)), torch.tensor(tail)].tolist() if tail else []
            slot = row_logp[0]
            for i in row.choices:
                cont = conts[i]
                res["logprobs"][i] = math.fsum(token_lp[: len(cont) - 1]) + row_logp[len(cont) - 1, cont[-1]].item()
                if self._content_ranks:
                    res.setdefault("content_ranks", [0] * len(conts))[i] = self.content_rank(row_logp, cont)
            if "top1" not in res:  # the answer slot is the same position in every row of a request
                diag = slot_diagnostics(slot, conts)
                res["first_ranks"], res["valid_mass"], res["top1"] = diag.first_ranks, diag.valid_mass, diag.top1
                for layer in hidden_layers:
                    res["hidden"][layer] = states[layer][b].clone()


def _scored(res: dict, conts: list[list[int]]) -> Scored:
    first_ids = [c[0] for c in conts]
    return Scored(
        logprobs=res["logprobs"],
        n_tokens=[len(c) for c in conts],
        first_token_ids=first_ids,
        first_token_ranks=res["first_ranks"],
        valid_mass=res["valid_mass"],
        top1_token_id=res["top1"],
        top1_valid=res["top1"] in set(first_ids),
        hidden=res["hidden"],
        content_ranks=res.get("content_ranks"),
    )


@dataclass
class SlotDiagnostics:
    first_ranks: list[int]  # 1-based rank of each continuation's first token in the full vocabulary
    valid_mass: float  # probability of the distinct first tokens of all continuations
    top1: int  # unconstrained most likely next token
    top1_valid: bool  # does that token start one of the continuations?


def slot_diagnostics(slot: torch.Tensor, conts: list[list[int]]) -> SlotDiagnostics:
    """Attempt diagnostics from the next-token log-probabilities at the answer slot; every method reports these."""
    slot = slot.detach()
    distinct_first = sorted({c[0] for c in conts})
    top1 = int(slot.argmax().item())
    return SlotDiagnostics(
        first_ranks=[int((slot > slot[c[0]]).sum().item()) + 1 for c in conts],
        valid_mass=float(slot[distinct_first].exp().sum().item()),
        top1=top1,
        top1_valid=top1 in distinct_first,
    )


def _group_rows(rows: list[_Row], shared: int) -> tuple[list[tuple[int, list[_Row]]], list[_Row]]:
    """Split rows into groups that share a long token prefix beyond `shared`, and the rest.

    Rows are sorted by their tokens, so rows with a common prefix are neighbours; a group's prefix stops at
    least one token before each member's answer slot.
    """
    ordered = sorted(rows, key=lambda r: r.tokens[shared:])
    groups, singles = [], []
    i = 0
    while i < len(ordered):
        current = ordered[i].ctx_len - 1
        j = i + 1
        while j < len(ordered):
            candidate = min(current, ordered[j].ctx_len - 1, _common_prefix_len([ordered[i].tokens, ordered[j].tokens]))
            if candidate - shared < max(MIN_GROUP_PREFIX, (current - shared) // 2):
                break
            current, j = candidate, j + 1
        if j - i > 1:
            groups.append((current, ordered[i:j]))
        else:
            singles.append(ordered[i])
        i = j
    return groups, singles


def _common_prefix_len(seqs: list[list[int]]) -> int:
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


def _expand_cache(cache, batch_size: int):
    """A view of a batch-1 cache repeated `batch_size` times; the shared tensors are never written."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        if getattr(layer, "is_initialized", False) and layer.keys is not None and layer.keys.numel():
            layer.keys = layer.keys.expand(batch_size, -1, -1, -1)
            layer.values = layer.values.expand(batch_size, -1, -1, -1)
        new.layers.append(layer)
    return new


def _mixable(cache) -> bool:
    """Can views of this cache be cut and stacked with others? Only plain full-attention layers, whose tensors hold
    every position in order (a sliding-window layer keeps the last window only)."""
    return all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)


def _slice_cache(cache, length: int):
    """A view of a batch-1 cache holding its first `length` positions; the shared tensors are never written."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        layer.keys, layer.values = layer.keys[:, :, :length], layer.values[:, :, :length]
        new.layers.append(layer)
    return new


def _stack_caches(caches: list, starts: list[int]):
    """One cache of batch len(caches): row b holds caches[b] (its `starts[b]` positions; None when 0) at the right,
    zeros before it that the attention mask hides."""
    template = next(c for c in caches if c is not None)
    width = max(starts)
    new = copy.copy(template)
    new.layers = []
    for index, layer in enumerate(template.layers):
        layer = copy.copy(layer)
        shape = (len(caches), layer.keys.shape[1], width, layer.keys.shape[3])
        keys = layer.keys.new_zeros(shape)
        values = layer.values.new_zeros((*shape[:3], layer.values.shape[3]))
        for b, (cache, start) in enumerate(zip(caches, starts)):
            if cache is not None and start:
                keys[b, :, width - start :] = cache.layers[index].keys[0]
                values[b, :, width - start :] = cache.layers[index].values[0]
        layer.keys, layer.values = keys, values
        new.layers.append(layer)
    return new


# A batch cut by a token budget closes at the first row shorter than this share of its longest: at most a fifth of
# its positions are padding (1.25 positions computed per token).
MIN_FILL = 0.8


def _default_batch_tokens(device: torch.device) -> int:
    """Tokens per batch: small on CPU (measured: 512 beats 2048 by 30%, less padding), from free memory on a GPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(4096, min(65536, free // (2 * 1024 * 1024))))
    return 512


def execution_device(model: torch.nn.Module, module: torch.nn.Module | None = None) -> torch.device:
    """Where `module` of `model` (default: the model itself) computes. On one device, where its weights are; on a
    model that accelerate placed across devices, where its hook, or its nearest ancestor's, sends the inputs (an
    offloaded module's weights wait on the meta device, so they cannot say)."""
    module = model if module is None else module
    weight = next(module.parameters(), None)
    if weight is not None and weight.device.type != "meta" and not hasattr(module, "_hf_hook"):
        return weight.device
    names = {id(m): name for name, m in model.named_modules()}
    name = names.get(id(module), "")
    modules = dict(model.named_modules())
    chain = [name.rsplit(".", i)[0] for i in range(name.count(".") + 1)] + [""] if name else [""]
    for ancestor in chain:
        device = _hook_device(modules[ancestor])
        if device is not None:
            return device
    return weight.device if weight is not None else torch.device("cpu")


def _hook_device(module: torch.nn.Module) -> torch.device | None:
    """The execution device of an accelerate hook on `module` (one hook, or a SequentialHook of several)."""
    hook = getattr(module, "_hf_hook", None)
    for h in [hook, *getattr(hook, "hooks", ())]:
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return None
