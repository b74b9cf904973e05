"""Generated-answer tasks: generators, GPT-3 files, exact match and its stop rule, greedy decoding."""

from __future__ import annotations

import dataclasses
import random
import re

import numpy as np
import pytest
import torch

from harness.catalog import get_task
from harness.engine import Engine
from harness.errors import HarnessError
from harness.loaders import DataSource
from harness.metrics import Resampler, baselines, generated_correct, main_metric, unit_metrics
from harness.store import Record
from harness.synthetic import GPT3_TRAIN, generate_split, gpt3_tasks, load_gpt3_split, random_answer_fields
from tests.conftest import SHARED_DATA, require

GPT3 = SHARED_DATA / "gpt3-arithmetic"


@pytest.mark.parametrize("name", ["add-2d", "sub-3d", "mul-2d", "div-2d", "mixed-1d", "sort-5"])
def test_generators_are_deterministic_disjoint_and_correct(name):
    spec = get_task(name)
    val, train = generate_split(spec, "val"), generate_split(spec, "train")
    assert [e.fields for e in val] == [e.fields for e in generate_split(spec, "val")]
    assert len(val) == 200 and len(train) == 512
    assert not {str(e.fields) for e in val} & {str(e.fields) for e in train}  # demos never give away an answer
    for ex in val + train:
        f = ex.fields
        if name == "sort-5":
            assert len(f["numbers"]) == 5 and f["answer"] == str(sorted(f["numbers"]))
            continue
        a, b = f["a"], f["b"]
        digits = int(name.split("-")[1][0])
        if name.startswith("div"):
            assert b * int(f["answer"]) == a and len(str(b)) == digits and len(f["answer"]) == digits
            continue
        assert len(str(a)) == digits and len(str(b)) == digits
        expected = {"add": a + b, "sub": a - b, "mul": a * b}.get(name[:3])
        if name.startswith("mixed"):  # precedence: x before +
            terms = [[int(t) for t in part.split("×")] for part in f["expression"].replace(" ", "").split("+")]
            expected = sum(int(np.prod(t)) for t in terms)
        assert f["answer"] == str(expected)


def test_task_names_carry_settings_and_unknown_names_fail():
    assert get_task("add-5d").max_new_tokens == 10 and main_metric("add-5d") == "em"
    assert main_metric("sort-7") == "em" and main_metric("multirc") == "f1a" and main_metric("cb") == "acc"
    with pytest.raises(HarnessError, match="add-Nd"):
        get_task("add-0d")


def test_random_answers_keep_the_form_and_are_wrong():
    rng = random.Random(0)
    for name in ("add-2d", "sub-2d", "sort-5"):
        for ex in generate_split(get_task(name), "train")[:30]:
            wrong = random_answer_fields(get_task(name), ex.fields, rng)
            if name == "sort-5" and len(set(ex.fields["numbers"])) == 1:
                continue
            assert wrong["answer"] != ex.fields["answer"]
            if name == "sort-5":
                assert sorted(wrong["numbers"]) == sorted(ex.fields["numbers"])
                assert wrong["sorted_items"] == ", ".join(wrong["answer"].strip("[]").split(", "))
            else:
                assert len(wrong["answer"].lstrip("-")) == len(ex.fields["answer"].lstrip("-"))
                assert wrong["answer"].startswith("-") == ex.fields["answer"].startswith("-")


def test_gpt3_files_split_into_disjoint_train_and_val():
    require(GPT3.is_dir(), str(GPT3))
    assert "gpt3-two-digit-addition" in gpt3_tasks(GPT3)
    spec = get_task("gpt3-two-digit-addition")
    val, train = load_gpt3_split(spec, GPT3, "val"), load_gpt3_split(spec, GPT3, "train")
    assert len(train) == GPT3_TRAIN and len(val) == 2000 - GPT3_TRAIN
    assert not {e.id for e in val} & {e.id for e in train}
    ex = val[0]
    a, b = map(int, re.findall(r"\d+", ex.fields["question"]))
    assert ex.fields["answer"] == str(a + b) and ex.fields["context"].endswith("A:")
    # found beside a SuperGLUE data folder, as the README runs it
    assert DataSource.from_option(str(SHARED_DATA / "superglue")).has_split(spec, "val")


def _record(generated: str, gold: str, rank: int = 1) -> Record:
    return Record("x", "x", [0], [-1.5], gold_rank=rank, generated=generated, gold_texts=[gold])


def test_exact_match_attempt_rate_and_chance():
    # outputs are already cut at the first newline by the engine; spaces around them do not count
    records = [_record(" 42", "42"), _record("42 ", "42"), _record(" 41", "42"), _record(" forty", "42")]
    assert [generated_correct(r) for r in records] == [True, True, False, False]
    for i, r in enumerate(records):
        r.example_id = r.group = str(i)
    rs = Resampler([r.group for r in records])
    m = unit_metrics("add-2d", "gold", records, rs, 0)
    assert m["em"].value == 0.5
    assert m["attempt_rate"].value == 0.75  # " forty" is not a number
    assert m["acc_when_attempted"].value == pytest.approx(2 / 3)
    assert m["gold_logprob"].value == -1.5
    chance = baselines("add-2d", records, rs, 0)
    assert set(chance) == {"chance"} and chance["chance"]["em"].value == 0.0


def test_greedy_generation_stops_at_newline_and_matches_plain_decoding(tiny_lm):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    contexts = ["The man turned on the", "Paris is", "Question: Is the answer correct? yes no True False"]
    batched = engine.generate(contexts, max_new_tokens=12, batch_size=3)
    for context, out in zip(contexts, batched):
        assert "\n" not in out
        ids = torch.tensor([tokenizer.encode(context)])
        plain = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(plain[0, ids.shape[1] :], skip_special_tokens=True)
        assert out == text.split("\n", 1)[0]  # left padding changes nothing; the stop rule only cuts


PRESIDENTS = SHARED_DATA / "presidents" / "presidents.json"


def test_presidents_ranks_match_a_plain_forward_pass_on_a_real_model(smollm2):
    require(PRESIDENTS.is_file(), str(PRESIDENTS))
    from harness.presidents import load_presidents, read_list

    examples = load_presidents(PRESIDENTS)
    assert len(examples) == 46 and examples[0].fields["line"] == "George Washington, 1789 - 1797"
    assert examples[-1].fields["line"].endswith("- present")
    engine = Engine(smollm2.model, smollm2.tokenizer)
    records = read_list(engine, examples)
    # the same numbers from the model's own logits over the whole text, tokenized line by line
    tokenizer = smollm2.tokenizer
    ids = [engine.prefix_token_id]
    line_starts = []
    for ex in examples:
        line_starts.append(len(ids))
        ids += tokenizer.encode(ex.fields["line"] + "\n", add_special_tokens=False)
    logp = torch.log_softmax(smollm2.model(torch.tensor([ids])).logits[0].float(), -1)
    for ex, rec, start in zip(examples, records, line_starts):
        gold = ids[start]
        assert ex.fields["name"].startswith(tokenizer.decode([gold]).strip())
        assert rec.logprobs[0] == pytest.approx(logp[start - 1, gold].item(), abs=1e-3)
        assert rec.gold_rank == int((logp[start - 1] > logp[start - 1, gold]).sum()) + 1
    ranks = np.array([r.gold_rank for r in records])
    # a real model knows the list: the right name's first token is usually in its top 10 once it has context
    assert (ranks[1:] <= 10).mean() > 0.5 and records[0].gold_rank > 1


@pytest.mark.parametrize("method,variant", [("bitfit", "bitfit"), ("ptune", "prompt-tuning")])
def test_trained_methods_on_generated_answers(tiny_lm, method, variant):
    from harness.methods.base import TrainedUnit, control_examples
    from harness.methods.presets import load_preset
    from harness.methods.tuning import run_tuning_unit
    from harness.prompts import load_prompts
    from harness.synthetic import ANSWER_FIELDS

    model, tokenizer = tiny_lm
    spec = get_task("add-1d")
    prompts = load_prompts(spec.prompts_name)
    evals, train = generate_split(spec, "val")[:6], generate_split(spec, "train")
    preset = dataclasses.replace(load_preset(method, None, []), max_steps=3, eval_every=3)
    if method == "ptune":
        preset = dataclasses.replace(preset, num_virtual_tokens=4)
    before = [p.detach().clone() for p in model.parameters()]
    outputs, info = run_tuning_unit(
        TrainedUnit(method, variant, "question", 16, 0), spec, prompts, model, tokenizer, evals, train, preset
    )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is left as it was
    records = outputs[0].records
    assert [r.gold_texts[0] for r in records] == [e.fields["answer"] for e in evals]
    assert all(r.generated is not None and "\n" not in r.generated and len(r.logprobs) == 1 for r in records)
    assert 0.0 <= info["holdout_acc"] <= 1.0 and info["holdout_curve"][0][0] == 0
    # the control task trains on other examples' answers: same answers, other problems
    control = control_examples(train, 0, "train", ANSWER_FIELDS)
    assert sorted(e.fields["answer"] for e in control) == sorted(e.fields["answer"] for e in train)
    assert [e.fields["a"] for e in control] == [e.fields["a"] for e in train]
    assert any(c.fields["answer"] != e.fields["answer"] for c, e in zip(control, train))


def test_content_rank_skips_white_space_tokens(tiny_lm):
    from harness.engine import Request

    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    context, answer = "Q: What is 2 plus 50?\nA:", " 52"
    scored = engine.score([Request(context, [answer])], content_ranks=True)[0]
    ctx, cont = engine.encode_pair(context, answer)
    logp = torch.log_softmax(model(torch.tensor([ctx + cont])).logits[0].float(), -1)
    j = next(k for k, t in enumerate(cont) if tokenizer.decode([t]).strip())
    position = len(ctx) - 1 + j  # predicts cont[j]
    expected = int((logp[position] > logp[position, cont[j]]).sum()) + 1
    assert scored.content_ranks == [expected]
    assert engine.score([Request(context, [answer])])[0].content_ranks is None  # only when asked
