"""The method registry and the typed presets, without a model.

A method is one file plus one registration: a method defined here (always the first answer choice) is registered
once, then validated, listed, planned, costed, run and stored by `harness eval`'s own loop. A preset is a frozen
dataclass whose fields carry their types, allowed values and bounds: a bad value fails in one line that names the
file or `--set` and the key, and `asdict` of the shipped preset is what a store made with it keeps.
"""

from __future__ import annotations

import dataclasses
import io
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from rich.console import Console

from harness.config import EvalConfig
from harness.errors import HarnessError
from harness.evaluate import TaskPlan, _run_model, plan_trained, validate
from harness.methods import TRAINED_METHODS
from harness.methods.base import Method, RunContext, TaskContext, get_method, method_names, register, unregister
from harness.methods.bitfit import BitFitPreset
from harness.methods.ccs import CCSPreset
from harness.methods.presets import Preset, TrainingPreset, check_overrides, load_preset
from harness.methods.probe import ProbePreset
from harness.methods.prompt import gold_indices
from harness.methods.ptune import PTunePreset
from harness.prompts import load_prompts
from harness.store import Record, Store, UnitName, VariantRecords
from harness.tasks import Example, TaskSpec

REPO = Path(__file__).resolve().parent.parent
TASK = TaskSpec("colour", ("warm", "cool"), ("acc",))
PROMPTS = """task: colour
templates:
  - name: plain
    text: "{{word}} is a"
    choices: ["warm", "cool"]
  - name: question
    text: "Is {{word}} a warm or a cool colour?\\nAnswer:"
    choices: ["warm", "cool"]
"""
WARM, COOL = ["red", "orange", "yellow"], ["blue", "green", "teal", "indigo", "violet"]


def _examples() -> list[Example]:
    return [Example(f"e{i}", {"word": w}, label, f"e{i}") for i, (w, label) in enumerate(_labelled())]


def _labelled() -> list[tuple[str, int]]:
    return [(w, 0) for w in WARM] + [(w, 1) for w in COOL]


# ---------------------------------------------------------------- a method added in one registration
@dataclass(frozen=True)
class FirstChoiceUnit:
    method: ClassVar[str] = "first-choice"
    template: str

    @property
    def key(self) -> str:
        return str(UnitName("gold", self.template, "k0", 0))


class FirstChoice(Method):
    name = "first-choice"
    description = "always the first answer choice (a test's method)"

    def plan(self, task: TaskContext) -> list[FirstChoiceUnit]:
        return [FirstChoiceUnit(t.name) for t in task.prompts.templates]

    def run(self, unit: FirstChoiceUnit, ctx: RunContext) -> tuple[list[VariantRecords], dict]:
        template = ctx.task.prompts.get(unit.template)
        records = []
        for ex in ctx.task.eval_examples:
            _, choices = template.render(ex)
            scores = [0.0] + [-5.0] * (len(choices) - 1)
            records.append(Record(ex.id, ex.group, gold_indices(ex, choices, template), scores))
        ctx.advance(len(records))
        return [VariantRecords("gold", unit.template, 0, 0, records)], {"engine": ctx.engine}


@pytest.fixture
def first_choice():
    register(FirstChoice())
    yield
    unregister("first-choice")


def test_a_registered_method_is_validated_listed_planned_and_run(first_choice, tmp_path):
    assert method_names() == ("prompt", "ptune", "bitfit", "probe", "ccs", "first-choice")
    assert TRAINED_METHODS == ("ptune", "bitfit", "probe", "ccs")  # it trains nothing
    cfg = EvalConfig(models=["none"], methods=["first-choice"])
    validate(cfg)
    with pytest.raises(HarnessError) as unknown:
        validate(dataclasses.replace(cfg, methods=["first-choise"]))
    assert str(unknown.value) == (
        "unknown method 'first-choise' (--methods): known are prompt, ptune, bitfit, probe, ccs, first-choice"
    )

    (tmp_path / "colour.yaml").write_text(PROMPTS, encoding="utf-8")
    prompts = load_prompts("colour", tmp_path)
    task = TaskContext(cfg, TASK, prompts, _examples(), None, {})
    units = get_method("first-choice").plan(task)
    assert [u.key for u in units] == ["gold/plain/k0/s0", "gold/question/k0/s0"]
    assert get_method("first-choice").cost(units[0], task) == len(WARM) + len(COOL)  # the default: one per example

    store = Store(tmp_path / "run")
    out = io.StringIO()
    console = Console(file=out, width=200)
    _run_model("m", [TaskPlan(task, units, {"n_eval": 8})], "the engine", store, console)
    stored = store.records("m", "colour")
    assert sorted(stored) == [("first-choice", "gold", "plain", 0, 0), ("first-choice", "gold", "question", 0, 0)]
    records = stored[("first-choice", "gold", "plain", 0, 0)]
    by_id = {r.example_id: r for r in records}
    assert {i: by_id[f"e{i}"].gold for i in range(8)} == {i: [label] for i, (_, label) in enumerate(_labelled())}
    accuracy = sum(r.gold == [0] for r in records) / len(records)  # the first choice is right on the warm ones
    assert accuracy == 3 / 8
    assert store.unit_info(_key("gold/question/k0/s0")) == {"engine": "the engine"}  # the run got the context

    _run_model("m", [TaskPlan(task, units, {"n_eval": 8})], "the engine", store, console)  # a rerun runs nothing
    assert "all 2 units already stored" in out.getvalue()
    store.close()


def _key(unit: str):
    from harness.store import UnitKey

    return UnitKey("m", "colour", "first-choice", unit)


def test_unknown_methods_name_the_flag_and_the_known_ones():
    with pytest.raises(HarnessError) as bad:
        validate(EvalConfig(models=["none"], methods=["prompt", "magic"]))
    assert str(bad.value) == "unknown method 'magic' (--methods): known are prompt, ptune, bitfit, probe, ccs"
    with pytest.raises(HarnessError, match=r"^unknown method 'prompt' \(--permuted-label-check\): trained methods"):
        validate(EvalConfig(models=["none"], permuted_label_check=["prompt"]))
    with pytest.raises(HarnessError) as bad_set:
        check_overrides(["prompt.shots=3"])  # prompt has no preset
    assert str(bad_set.value) == (
        "--set 'prompt.shots=3': unknown method 'prompt' (presets exist for ptune, bitfit, probe, ccs)"
    )


def test_trained_methods_plan_through_the_registry(tmp_path):
    (tmp_path / "colour.yaml").write_text(PROMPTS, encoding="utf-8")
    prompts = load_prompts("colour", tmp_path)
    train = _examples()
    presets = {m: load_preset(m) for m in ("ptune", "probe")}
    cfg = EvalConfig(models=["none"], methods=["ptune", "probe"], train_sizes=[4], seeds=2, permuted_label_check=[])
    units, notes = plan_trained(cfg, TASK, prompts, train, "test", presets)
    # ptune: one unit per variant of its preset and seed; probe: its random-init baseline too (the default)
    assert [(u.method, u.variant, u.seed) for u in units] == [
        ("ptune", "prompt-tuning", 0),
        ("ptune", "prompt-tuning", 1),
        ("ptune", "p-tuning", 0),
        ("ptune", "p-tuning", 1),
        ("probe", "probe", 0),
        ("probe", "probe-random-init", 0),
        ("probe", "probe", 1),
        ("probe", "probe-random-init", 1),
    ]
    assert {u.template for u in units} == {"plain"} and notes == []  # not a SuperGLUE task: its first template
    task = TaskContext(cfg, TASK, prompts, _examples(), train, presets)
    assert get_method("ptune").cost(units[0], task) == 300 + 8  # the preset's max_steps, then the eval examples
    assert get_method("probe").cost(units[-1], task) == 8
    generated = dataclasses.replace(TASK, answer="generate")
    _, notes = plan_trained(cfg, generated, prompts, train, "test", presets)
    assert notes[0].startswith("probe not applicable: colour has a generated answer")


# ---------------------------------------------------------------- presets: typed, checked from the dataclass
def test_each_trained_method_has_its_preset_class_and_every_field_says_what_it_is():
    assert {m: get_method(m).preset_class for m in TRAINED_METHODS} == {
        "ptune": PTunePreset,
        "bitfit": BitFitPreset,
        "probe": ProbePreset,
        "ccs": CCSPreset,
    }
    assert get_method("prompt").preset_class is None
    assert issubclass(PTunePreset, TrainingPreset) and issubclass(BitFitPreset, TrainingPreset)
    for cls in (PTunePreset, BitFitPreset, ProbePreset, CCSPreset):
        for f in dataclasses.fields(cls):
            assert len(f.metadata["help"]) > 10, (cls, f.name)
            assert f.default is dataclasses.MISSING  # the shipped value lives in probes/<method>.yaml only
        shipped = yaml.safe_load((REPO / "probes" / f"{cls.__name__[:-6].lower()}.yaml").read_text())
        assert list(shipped) and set(shipped) == set(cls.known_keys())


def test_shipped_presets_are_the_dicts_a_store_keeps(tmp_path):
    """asdict of each shipped preset equals what a store made with the shipped presets holds, so it resumes (the
    validity run's committed store, read from a copy: SQLite writes beside a file it opens)."""
    db = tmp_path / "results.db"
    db.write_bytes((REPO / "reports" / "validity" / "results.db").read_bytes())
    conn = sqlite3.connect(db)
    stored = yaml.safe_load(conn.execute("SELECT value FROM meta WHERE key = 'presets'").fetchone()[0])
    conn.close()
    assert "probe" in stored and set(stored) <= set(TRAINED_METHODS)  # the methods that store ran
    for method in stored:
        preset = load_preset(method)
        assert dataclasses.asdict(preset) == preset.to_dict() == stored[method]
    assert isinstance(load_preset("bitfit").max_seconds, float)  # 900 in the YAML: a number is kept as a float


@pytest.mark.parametrize(
    "override,message",
    [
        # a bad type
        ("ptune.max_steps=many", "--set ptune.max_steps=many: ptune.max_steps must be an integer, not 'many'"),
        ("ptune.max_steps=2.5", "--set ptune.max_steps=2.5: ptune.max_steps must be an integer, not 2.5"),
        (
            "bitfit.learning_rate=true",
            "--set bitfit.learning_rate=true: bitfit.learning_rate must be a number, not True",
        ),
        ("probe.template=", "--set probe.template=: probe.template must be a non-empty string, not ''"),
        # a value outside its choices
        ("probe.pooling=max", "--set probe.pooling=max: probe.pooling must be one of last, mean, not 'max'"),
        ("bitfit.objective=mse", "--set bitfit.objective=mse: bitfit.objective must be one of choices, lm, not 'mse'"),
        (
            "ptune.variants=[lora]",
            "--set ptune.variants=[lora]: ptune.variants must be a list drawn from prompt-tuning, p-tuning, "
            "not ['lora']",
        ),
        (
            "probe.layers=[1, two]",
            "--set probe.layers=[1, two]: probe.layers must be 'all' or a list of integers, not [1, 'two']",
        ),
        ("probe.layers=some", "--set probe.layers=some: probe.layers must be 'all' or a list of integers, not 'some'"),
        # out of bounds
        ("bitfit.batch_size=0", "--set bitfit.batch_size=0: bitfit.batch_size must be positive, not 0"),
        ("ptune.max_seconds=-1", "--set ptune.max_seconds=-1: ptune.max_seconds must be positive, not -1.0"),
        ("probe.C=0", "--set probe.C=0: probe.C must be positive, not 0.0"),
        ("bitfit.holdout=1", "--set bitfit.holdout=1: bitfit.holdout must be between 0 and 1, not 1.0"),
        ("probe.cv_folds=1", "--set probe.cv_folds=1: probe.cv_folds must be at least 2, not 1"),
        # an unknown key
        (
            "probe.depth=3",
            "--set probe.depth=3: unknown key 'depth' for probe (known: template, pooling, layers, C, max_iter, "
            "cv_folds)",
        ),
    ],
)
def test_a_bad_override_is_one_line_naming_the_set_and_the_key(override, message):
    with pytest.raises(HarnessError) as bad:
        check_overrides([override])
    assert str(bad.value) == message
    method = override.split(".")[0]
    with pytest.raises(HarnessError) as again:  # the same check when the preset is loaded
        load_preset(method, overrides=[override])
    assert str(again.value) == message


def test_overrides_are_typed_and_canonical():
    ptune = load_preset("ptune", overrides=["ptune.variants=p-tuning", "ptune.learning_rate=1", "ptune.steps=40"])
    assert (ptune.variants, ptune.learning_rate, ptune.max_steps) == (["p-tuning"], 1.0, 40)
    assert isinstance(ptune.learning_rate, float)
    assert load_preset("ptune", overrides=["ptune.variants=[p-tuning, p-tuning]"]).variants == ["p-tuning"]
    assert load_preset("probe", overrides=["probe.template=123"]).template == "123"  # a text key keeps the text
    assert load_preset("bitfit", overrides=["ptune.max_steps=7"]).max_steps == 300  # another method's --set


def test_a_bad_preset_file_names_the_file_and_the_key(tmp_path):
    good = (REPO / "probes" / "bitfit.yaml").read_text()
    path = tmp_path / "bitfit.yaml"
    path.write_text(good + "warmup: 3\n")
    with pytest.raises(HarnessError) as unknown:
        load_preset("bitfit", tmp_path)
    assert str(unknown.value).startswith(f"{path}: unknown key 'warmup' for bitfit (known: template, learning_rate,")
    path.write_text(good.replace("patience: 4", "patience: 0"))
    with pytest.raises(HarnessError) as bound:
        load_preset("bitfit", tmp_path)
    assert str(bound.value) == f"{path}: bitfit.patience must be positive, not 0"
    path.write_text("\n".join(line for line in good.splitlines() if not line.startswith(("holdout", "objective"))))
    with pytest.raises(HarnessError) as missing:
        load_preset("bitfit", tmp_path)
    assert str(missing.value) == f"{path}: missing key(s) holdout, objective"
    path.write_text(good.replace("max_steps:", "steps:"))  # the old name of max_steps
    assert load_preset("bitfit", tmp_path) == load_preset("bitfit")


def test_a_preset_built_or_changed_in_code_is_checked_too():
    probe = load_preset("probe")
    with pytest.raises(HarnessError) as bad:
        dataclasses.replace(probe, cv_folds=1)
    assert str(bad.value) == "ProbePreset.cv_folds must be at least 2, not 1"
    with pytest.raises(HarnessError, match=r"^BitFitPreset\.objective must be one of choices, lm, not 'lm2'$"):
        dataclasses.replace(load_preset("bitfit"), objective="lm2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        probe.C = 2.0  # type: ignore[misc]
    assert dataclasses.replace(probe, C=2).C == 2.0 and isinstance(probe, Preset)
