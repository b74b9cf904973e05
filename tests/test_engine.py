"""The engine's shortcuts (shared prefixes, grouped rows, one row for several choices, right padding) must give the
same log-likelihoods as scoring each (context, continuation) alone with a plain full-sequence pass."""

from __future__ import annotations

import pytest
import torch

from harness.engine import Engine, Request, Work, _group_rows, _Row, counted

DEMOS = (
    "The man turned on the faucet.\nQuestion: Water flowed. True or False?\nAnswer: True\n\n"
    "The cat sat on the mat.\nQuestion: The cat was tired. True or False?\nAnswer: False\n\n"
)
PARAGRAPH = "Passage: Bernard, who had not told the government official that he was less than 21, did not consider it."


def _requests() -> list[Request]:
    reqs = []
    for i in range(5):
        reqs.append(
            Request(
                DEMOS + f"Paris is {'the capital ' * i}of France.\nQuestion: Is it {i}? True or False?\nAnswer:",
                [" True", " False", " Neither", " Neither of these"],
            )
        )
    # several answers to one passage: rows share a long prefix beyond the demos (MultiRC-like)
    for answer in ["21", "the government", "Bernard did not consider it"]:
        reqs.append(Request(DEMOS + PARAGRAPH + f"\nAnswer: {answer}\nIs the answer correct?", [" yes", " no"]))
    # multi-token choices that share no prefix (COPA-like), a context with trailing space, an empty context
    reqs.append(
        Request("The toilet filled with water because", [" the man turned on the faucet.", " Paris is in France."])
    )
    reqs.append(Request("Sentence 1: An emerging class. ", ["yes", "no"]))
    reqs.append(Request("", ["The cat sat.", "The"]))
    return reqs


def _reference(engine: Engine, model, request: Request) -> list[float]:
    out = []
    for cont in request.continuations:
        ctx, tail = engine.encode_pair(request.context, cont)
        ids = torch.tensor([ctx + tail], device=model.device)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        out.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(tail)))
    return out


@pytest.mark.parametrize("batch_size", [None, 1, 2, 3, 7])
def test_engine_matches_full_sequence_tiny(tiny_lm, batch_size):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer, batch_size=batch_size)
    requests = _requests()
    scored = engine.score(requests)
    for request, result in zip(requests, scored):
        ref = _reference(engine, model, request)
        assert result.logprobs == pytest.approx(ref, abs=1e-4)
        assert result.n_tokens == [len(engine.encode_pair(request.context, c)[1]) for c in request.continuations]


@pytest.mark.parametrize("prefix_attention", ["expand", "shared"])
def test_engine_in_bfloat16_matches_a_full_sequence_pass(tiny_lm, prefix_attention):
    """A bfloat16 model (on `--device`): the engine's shortcuts stay within bfloat16's rounding of a plain
    full-sequence pass in bfloat16 (8 significant bits: 2^-8 of each log-likelihood, the two passes round apart),
    and pick its answer wherever its margin is wider than that."""
    from tests.conftest import make_tiny_lm

    model = make_tiny_lm()[0].to(tiny_lm[0].device, torch.bfloat16)
    tokenizer = tiny_lm[1]
    engine = Engine(model, tokenizer, batch_size=3, prefix_attention=prefix_attention)
    requests = _requests()
    for request, result in zip(requests, engine.score(requests)):
        ref = _reference(engine, model, request)
        tolerance = [max(1e-2, abs(r) * 2**-8) for r in ref]
        assert all(abs(a - b) <= t for a, b, t in zip(result.logprobs, ref, tolerance)), (result.logprobs, ref)
        best = max(range(len(ref)), key=ref.__getitem__)
        if all(ref[best] - r > 2 * max(tolerance) for i, r in enumerate(ref) if i != best):
            assert max(range(len(ref)), key=result.logprobs.__getitem__) == best


def test_a_large_token_budget_does_not_pad_short_rows_to_the_longest(tiny_lm):
    """A budget that holds every row (a GPU's) still cuts batches where rows get shorter than MIN_FILL of the
    longest: at most 1.25 positions per token (one batch of all would compute more than twice the tokens here)."""
    model, tokenizer = tiny_lm
    tails = ["Is it?", "Paris is the capital of France, and the cat sat on the mat because it was tired. Is it?"]
    requests = [Request(DEMOS + tails[i % 2] * (1 + i % 5) + "\nAnswer:", [" True", " False"]) for i in range(20)]
    engine = Engine(model, tokenizer, max_batch_tokens=1_000_000)
    scored = engine.score(requests)
    assert engine.work.passes > 2  # the prefix, then more than one batch
    assert engine.positions_computed <= 1.25 * engine.tokens_computed
    rows, _ = engine._rows(requests)
    own = [len(r.tokens) - len(engine._encode(DEMOS.rstrip())) for r in rows]
    assert len(rows) * max(own) > 2 * sum(own)  # what one batch of every row would have computed
    for request, result in zip(requests, scored):
        assert result.logprobs == pytest.approx(_reference(engine, model, request), abs=1e-4)


def _lists() -> list[list[Request]]:
    """Several units' requests: the same prefix start as another, a prefix sharing only its first part, a prefix
    inside another's, no prefix, and an empty list."""
    other = "The cat sat on the mat because it was tired, therefore it slept.\nAnswer: no\n\n"
    return [
        _requests(),
        [Request(DEMOS + f"Is it {i}?\nAnswer:", [" yes", " no"]) for i in range(3)],
        [Request(DEMOS + f"Is it {i} or not?\nAnswer:", [" yes", " no"]) for i in range(4, 6)],  # the same prefix
        [Request(DEMOS[:60] + other + f"Water {i}\nAnswer:", [" yes", " no"]) for i in range(4)],
        [Request(f"Paris {i} is", [" True", " False"]) for i in range(3)],
        [Request(other + other + f"Q {i}?", [" True", " False"]) for i in range(2)],
        [Request(other + f"Q {i}?", [" True", " False", " Neither"]) for i in range(2)],
        [],
    ]


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize(("batch_size", "max_batch_tokens"), [(None, None), (None, 2000), (2, None), (7, None)])
def test_lists_scored_together_match_one_at_a_time(tiny_lm, monkeypatch, batch_size, max_batch_tokens, pack):
    """Several units in one call give each unit's scores as `score` alone does: bit for bit, or with `pack` (packed
    batches, prefixes stacked or continued from another's) within 1e-5 nats; each list is handed over once, when its
    last request is scored."""
    import harness.engine as engine_module

    model, tokenizer = tiny_lm
    lists = _lists()
    alone = Engine(model, tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    expected = [alone.score(requests) for requests in lists]
    stacked: list[int] = []
    stack = engine_module._stack_caches
    monkeypatch.setattr(engine_module, "_stack_caches", lambda c, s: stacked.append(len(c)) or stack(c, s))
    engine = Engine(model, tokenizer, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    handed: list[tuple[int, list]] = []
    steps: list[int] = []
    got = engine.score_lists(lists, progress=steps.append, on_list_done=lambda i, s: handed.append((i, s)), pack=pack)
    for want, have in zip(expected, got):
        assert len(want) == len(have)
        for a, b in zip(want, have):
            assert b.logprobs == pytest.approx(a.logprobs, abs=1e-5) if pack else b.logprobs == a.logprobs
            assert (b.first_token_ranks, b.top1_token_id, b.n_tokens) == (
                a.first_token_ranks,
                a.top1_token_id,
                a.n_tokens,
            )
            assert b.valid_mass == pytest.approx(a.valid_mass, abs=1e-5)
    assert sorted(i for i, _ in handed) == list(range(len(lists)))
    assert all(scored is got[i] for i, scored in handed)
    assert sum(steps) == sum(len(requests) for requests in lists)
    # shared prefix work: less decoder work than one list at a time
    assert engine.tokens_computed < alone.tokens_computed
    if batch_size == 7 and pack:  # room for the part-filled batches of several prefixes in one
        assert stacked
    if not pack:
        assert not stacked


def test_prefix_caches_continue_earlier_prefixes(tiny_lm):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    a = list(range(1, 31))
    prefixes = [a, a[:20], a[:20] + [40, 41, 42], list(a), [], [50] * 12]
    caches = engine._prefix_caches(prefixes)
    assert caches[3] is caches[0] and caches[4] is None
    assert engine.tokens_computed == 30 + 3 + 12  # the cut one and the identical one cost nothing
    # attention work: each new position attends to the cached ones and itself and those before it
    assert engine.work.pairs == 30 * 31 // 2 + (3 * 20 + 3 * 4 // 2) + 12 * 13 // 2
    for prefix, cache in zip(prefixes, caches):
        if prefix:
            with torch.no_grad():
                full = engine.decoder(
                    input_ids=torch.tensor([prefix], device=model.device), use_cache=True
                ).past_key_values
            for mine, ref in zip(cache.layers, full.layers):
                assert mine.keys.shape[2] == len(prefix)
                assert torch.allclose(mine.keys, ref.keys, atol=1e-5)
                assert torch.allclose(mine.values, ref.values, atol=1e-5)


def test_padding_side_does_not_matter(tiny_lm):
    model, tokenizer = tiny_lm
    requests = _requests()
    tokenizer.padding_side = "left"
    left = Engine(model, tokenizer, batch_size=4).score(requests)
    tokenizer.padding_side = "right"
    right = Engine(model, tokenizer, batch_size=4).score(requests)
    for a, b in zip(left, right):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-6)


def test_diagnostics_are_computed_from_the_full_vocabulary(tiny_lm):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    request = _requests()[0]
    result = engine.score([request])[0]
    ctx, _ = engine.encode_pair(request.context, request.continuations[0])
    with torch.no_grad():
        slot = torch.log_softmax(model(torch.tensor([ctx], device=model.device)).logits[0, -1].float(), dim=-1).cpu()
    firsts = sorted(set(result.first_token_ids))
    assert result.valid_mass == pytest.approx(slot[firsts].exp().sum().item(), abs=1e-5)
    assert result.top1_token_id == int(slot.argmax())
    assert result.top1_valid == (int(slot.argmax()) in firsts)
    for token, rank in zip(result.first_token_ids, result.first_token_ranks):
        assert rank == int((slot > slot[token]).sum()) + 1


def test_rows_are_shared_between_choices_and_grouped(tiny_lm):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    requests = _requests()
    rows, _ = engine._rows(requests)
    # the four yes/no-like choices of the first request: " Neither of these" covers " Neither" only if the
    # tokenizer splits it so; " True"/" False" are single tokens and never need rows of their own
    first = [r for r in rows if r.request == 0]
    assert sum(len(r.choices) for r in first) == 4
    assert len(first) < 4
    groups, singles = _group_rows(rows, shared=0)
    grouped_requests = {r.request for _, members in groups for r in members}
    assert {5, 6, 7} <= grouped_requests  # the three answers to one passage share it


def test_hidden_states_at_the_answer_slot(tiny_lm):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    request = _requests()[1]
    result = engine.score([request], hidden_layers=[0, 2])[0]
    ctx, _ = engine.encode_pair(request.context, request.continuations[0])
    with torch.no_grad():
        states = model(torch.tensor([ctx], device=model.device), output_hidden_states=True).hidden_states
    for layer in (0, 2):
        assert torch.allclose(result.hidden[layer], states[layer][0, -1].cpu(), atol=1e-5)


def test_empty_continuation_is_rejected(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="no continuations"):
        Engine(model, tokenizer).score([Request("abc", [])])


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [None, 2])
def test_engine_matches_full_sequence_smollm2(smollm2, batch_size):
    engine = Engine(smollm2.model, smollm2.tokenizer, batch_size=batch_size)
    requests = _requests()
    scored = engine.score(requests)
    worst = 0.0
    for request, result in zip(requests, scored):
        ref = _reference(engine, smollm2.model, request)
        worst = max(worst, max(abs(a - b) for a, b in zip(result.logprobs, ref)))
    assert worst < 1e-4


def test_group_rows_keeps_answer_slots_out_of_the_shared_prefix():
    rows = [_Row(0, list(range(40)) + [1, 2], 41, [0]), _Row(1, list(range(40)) + [3], 40, [0])]
    groups, singles = _group_rows(rows, shared=0)
    assert not singles and len(groups) == 1
    length, members = groups[0]
    assert length <= min(r.ctx_len - 1 for r in members)


@pytest.mark.parametrize("max_items", [1, 3, 16])
def test_training_scorer_matches_full_sequence(tiny_lm, max_items):
    """The trained methods' differentiable scorer (right padding, length-sorted batches, one row for choices that
    differ only in their last token) gives the plain full-sequence scores, with and without a soft prompt."""
    from harness.methods.training import ChoiceScorer, _Item, _one_row

    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    # choices that differ only in their last token (this tokenizer splits ' A' into a space and 'A')
    requests = _requests() + [
        Request("Question: which letter?\nAnswer:", [" A", " B", " C"]),
        Request(DEMOS + PARAGRAPH + "\nAnswer: 21", ["\nIs the answer correct? A", "\nIs the answer correct? B"]),
    ]
    items = []
    for r in requests:
        pairs = [engine.encode_pair(r.context, c) for c in r.continuations]
        items.append(_Item(r.continuations, [0], pairs[0][0], [p[1] for p in pairs]))
    assert sum(_one_row(it) for it in items) == 2 and all(len(c) > 1 for c in items[-1].conts)
    soft = torch.randn(1, 3, model.config.hidden_size).to(model.device)
    for prompt in (None, lambda batch: soft.expand(batch, -1, -1)):
        scorer = ChoiceScorer(model, tokenizer, prompt)
        got = [None] * len(items)
        for indices in scorer.batches(items, max_items):
            assert len(indices) <= max_items
            for i, scores in zip(indices, scorer.score([items[i] for i in indices])):
                got[i] = scores.logprobs.tolist()
        for request, it, scores in zip(requests, items, got):
            expected = []
            for cont in it.conts:
                ids = torch.tensor([it.ctx + cont], device=model.device)
                embeds = model.get_input_embeddings()(ids)
                offset = 0 if prompt is None else soft.shape[1]
                if prompt is not None:
                    embeds = torch.cat([soft, embeds], dim=1)
                with torch.no_grad():
                    logp = torch.log_softmax(model(inputs_embeds=embeds).logits[0].float(), dim=-1)
                expected.append(sum(logp[offset + len(it.ctx) - 1 + j, t].item() for j, t in enumerate(cont)))
            assert scores == pytest.approx(expected, abs=1e-4), request.context[-40:]


def test_counted_work_of_a_scoring_pass(tiny_lm):
    """`counted` adds what the passes inside it computed: every row's tokens, its causal (query, key) pairs and its
    answer positions (the head), once per row, and the positions padding included."""
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer, batch_size=2)
    requests = [Request("The cat sat on the mat.", [" yes", " no"]), Request("Paris is in France", [" True"])]
    requests.append(Request("Water flowed", [" the man", " Paris"]))  # two rows, too short a context to share
    rows, _ = engine._rows(requests)
    before, work = engine.tokens_computed, Work()
    with counted(engine, work):
        engine.score(requests)
    lengths = [len(r.tokens) for r in rows]
    assert work.tokens == sum(lengths) == engine.tokens_computed - before
    assert work.pairs == sum(n * (n + 1) // 2 for n in lengths)
    assert work.head == sum(len(r.tokens) - r.ctx_len for r in rows)
    assert work.passes == 2 and work.positions >= work.tokens and work.seconds > 0


def test_pairs_tokenized_together_as_one_at_a_time(tiny_lm):
    """The engine tokenizes its requests' texts in one batched call: the ids of each pair are those of encoding it
    alone (empty contexts, trailing spaces moved to the continuation, repeated contexts from the cache)."""
    model, tokenizer = tiny_lm
    items = [(r.context, c) for r in _requests() for c in r.continuations]
    items += [("Water flowed.  ", "yes"), ("", " the cat"), (DEMOS + "Is it?\nAnswer:", " True")]
    together = Engine(model, tokenizer).encode_pairs(items)
    alone = Engine(model, tokenizer)
    expected = []
    for context, continuation in items:
        ctx = context.rstrip()
        whole = tokenizer.encode(ctx + context[len(ctx) :] + continuation) if context else None
        ids = tokenizer.encode(ctx) if context else [alone.prefix_token_id]
        expected.append((ids, whole[len(ids) :] if context else tokenizer.encode(continuation)))
    assert together == expected
    assert [alone.encode_pair(c, k) for c, k in items] == expected
