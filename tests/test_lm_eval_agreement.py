"""Our `lm-eval` templates score like lm-evaluation-harness itself.

lm-evaluation-harness 0.4.13 is run through its own Python API (`simple_evaluate`, `HFLM`) on the real
SmolLM2-135M with its own super_glue task YAML files (every prompt field included from them, only the data
source is pointed at local jsonl files, so the Hub is never needed). Our side runs the real method code
(`run_unit`) on the same first examples of the validation split. Both must give the same prompts, the same
per-choice log-likelihoods (within 1e-3 nats) and the same predictions:
- RTE and BoolQ zero-shot, the first 50 validation examples;
- RTE 2-shot: lm-eval's `first_n` sampler on the train split vs our `--demo-selection first`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import yaml

from harness.catalog import get_task
from harness.engine import Engine
from harness.loaders import DataSource
from harness.methods.prompt import PromptUnit, build_prefix, draw_demos, run_unit
from harness.prompts import load_prompts
from tests.conftest import offline_datasets, require

try:
    import lm_eval
except ImportError:  # the test extra installs it; without it the agreement cannot be checked
    lm_eval = None

N_DOCS = 50  # lm-eval's `limit`: the first N docs of the validation split
FEW_SHOTS = 2
TOLERANCE = 1e-3  # nats
LM_EVAL_BATCH_SIZE = 4  # lm-eval computes full-vocabulary logits at every position: keep memory moderate

# (our task, shots) -> the lm-eval task defined for it in the fixture below
CASES = {
    ("rte", 0): "agreement_rte",
    ("boolq", 0): "agreement_boolq",
    ("rte", FEW_SHOTS): f"agreement_rte_{FEW_SHOTS}shot",
}


# ---------------------------------------------------------------- original SuperGLUE jsonl -> aps/super_glue rows
def _hf_row(task: str, row: dict) -> dict:
    """One line of the original release in the Hub's field names and label ids (written independently of harness)."""
    if task == "rte":
        label = {"entailment": 0, "not_entailment": 1}[row["label"]]
        return {"premise": row["premise"], "hypothesis": row["hypothesis"], "idx": row["idx"], "label": label}
    if task == "boolq":
        return {"question": row["question"], "passage": row["passage"], "idx": row["idx"], "label": int(row["label"])}
    raise ValueError(task)


def _write_split(source: Path, task: str, target: Path) -> Path:
    with open(source, encoding="utf-8") as fh:
        rows = [_hf_row(task, json.loads(line)) for line in fh if line.strip()]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return target


def _task_yaml(base: Path, name: str, data_files: dict[str, Path], cache: Path, extra: dict) -> dict:
    """lm-eval's own task YAML (`include`), with only the task name and the data source overridden."""
    return {
        "include": str(base),
        "task": name,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {k: str(v) for k, v in data_files.items()}, "cache_dir": str(cache)},
        **extra,
    }


@pytest.fixture(scope="module")
def lm_eval_samples(smollm2, superglue_dir, tmp_path_factory):
    """Per-doc samples logged by one lm-eval run over all cases: {task name: samples sorted by doc_id}."""
    require(lm_eval is not None, "lm-eval", "pip install -e '.[test]'")
    rte_val = superglue_dir / "RTE" / "val.jsonl"
    rte_train = superglue_dir / "RTE" / "train.jsonl"
    boolq_val = superglue_dir / "BoolQ" / "val.jsonl"
    for path in (rte_val, rte_train, boolq_val):
        require(path.is_file(), str(path))

    tmp = tmp_path_factory.mktemp("lm_eval")
    cache = tmp / "datasets_cache"
    with pytest.MonkeyPatch.context() as mp:
        offline_datasets(mp, cache)

        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        super_glue = Path(lm_eval.__file__).parent / "tasks" / "super_glue"
        data = tmp / "data"
        data.mkdir()
        rte_files = {
            "validation": _write_split(rte_val, "rte", data / "rte_validation.jsonl"),
            "train": _write_split(rte_train, "rte", data / "rte_train.jsonl"),
        }
        boolq_files = {"validation": _write_split(boolq_val, "boolq", data / "boolq_validation.jsonl")}
        configs = [
            _task_yaml(super_glue / "rte" / "default.yaml", CASES["rte", 0], rte_files, cache, {}),
            # no local BoolQ train split: lm-eval would look for one (zero-shot needs none)
            _task_yaml(
                super_glue / "boolq" / "default.yaml", CASES["boolq", 0], boolq_files, cache, {"training_split": None}
            ),
            _task_yaml(
                super_glue / "rte" / "default.yaml",
                CASES["rte", FEW_SHOTS],
                rte_files,
                cache,
                {"num_fewshot": FEW_SHOTS, "fewshot_config": {"sampler": "first_n"}},
            ),
        ]
        task_dir = tmp / "tasks"
        task_dir.mkdir()
        for config in configs:
            (task_dir / f"{config['task']}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

        task_manager = TaskManager(include_path=str(task_dir), include_defaults=False)
        started = time.perf_counter()
        lm = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=LM_EVAL_BATCH_SIZE)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(CASES.values()),
            limit=N_DOCS,
            log_samples=True,
            task_manager=task_manager,
            # num_fewshot=None: each task keeps its own (0 where unset)
            # leave the global random generators alone (first_n sampling uses none)
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
        )
    print(
        f"\nlm-eval {lm_eval.__version__}: {len(CASES)} tasks x {N_DOCS} docs in {time.perf_counter() - started:.0f} s"
    )
    assert not any(cache.glob("**/downloads/*")), "lm-eval downloaded something"
    return {name: sorted(results["samples"][name], key=lambda s: s["doc_id"]) for name in CASES.values()}


def _lm_eval_logprobs(sample: dict) -> list[float]:
    """Per-choice summed log-likelihoods of one logged doc (filtered_resps: [(logprob, is_greedy), ...])."""
    resps = sample["filtered_resps"]
    return [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in resps]


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


@pytest.mark.slow
@pytest.mark.parametrize(("task_name", "shots"), list(CASES), ids=[f"{t}-{k}shot" for t, k in CASES])
def test_lm_eval_template_matches_lm_evaluation_harness(smollm2, superglue_dir, lm_eval_samples, task_name, shots):
    task = get_task(task_name)
    samples = lm_eval_samples[CASES[task_name, shots]]
    data = DataSource(superglue_dir)
    examples = data.load(task, "val")[:N_DOCS]
    train = data.load(task, "train") if shots else None
    prompts = load_prompts(task_name)
    template = prompts.get("lm-eval")

    # Same docs, in the same order, with the same gold labels.
    assert len(samples) == len(examples) == N_DOCS
    assert [s["doc_id"] for s in samples] == list(range(N_DOCS))
    assert [str(s["doc"]["idx"]) for s in samples] == [ex.id for ex in examples]
    assert [int(s["target"]) for s in samples] == [ex.label for ex in examples]

    # Same prompts: lm-eval's (context, continuation) pairs are exactly our prefix + text, delimiter + choice.
    prefix = build_prefix(template, prompts, draw_demos(train or [], shots, 0, "first", task.name), None, task)
    for sample, ex in zip(samples, examples):
        text, choices = template.render(ex)
        expected = [(prefix + text, template.target_delimiter + c) for c in choices]
        assert [tuple(a) for a in sample["arguments"]] == expected, f"prompt differs on example {ex.id}"

    # Same scores, from the real method code.
    engine = Engine(smollm2.model, smollm2.tokenizer)
    variants = run_unit(PromptUnit("lm-eval", shots, 0), task, prompts, engine, examples, train, "first")
    records = next(v for v in variants if v.variant == "gold").records
    assert [r.example_id for r in records] == [ex.id for ex in examples]

    worst, worst_at = 0.0, None
    mismatched, acc_differs = [], []
    for sample, record in zip(samples, records):
        theirs, ours = _lm_eval_logprobs(sample), list(record.logprobs)
        assert len(theirs) == len(ours) == len(task.labels)
        assert all(math.isfinite(x) and x < 0 for x in theirs + ours)
        for choice, (a, b) in enumerate(zip(ours, theirs)):
            if abs(a - b) > worst:
                worst, worst_at = abs(a - b), (record.example_id, choice, a, b)
        if _argmax(ours) != _argmax(theirs):
            mismatched.append((record.example_id, ours, theirs))
        if float(sample["acc"]) != float(_argmax(ours) in record.gold):  # lm-eval's own per-doc accuracy
            acc_differs.append(record.example_id)
    print(
        f"\n{task_name} {shots}-shot: {len(records)} docs, max |ours - lm-eval| = {worst:.3g} nats"
        + (
            f" (example {worst_at[0]}, choice {worst_at[1]}: ours {worst_at[2]:.6f}, lm-eval {worst_at[3]:.6f})"
            if worst_at
            else ""
        )
    )
    assert worst <= TOLERANCE, f"log-likelihoods differ by {worst:.4g} nats at {worst_at}"
    assert not mismatched, f"predictions differ: {mismatched}"
    assert not acc_differs, f"lm-eval's accuracy differs from ours on examples {acc_differs}"

    # The comparison is not vacuous: the choices get different scores, so a swap or a wrong template would show.
    gaps = [abs(r.logprobs[0] - r.logprobs[1]) for r in records]
    assert sum(g > 10 * TOLERANCE for g in gaps) >= 0.9 * len(gaps)
    assert len({round(r.logprobs[0], 3) for r in records}) > len(records) // 2
