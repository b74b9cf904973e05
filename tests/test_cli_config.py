"""The commands are built from their config dataclasses (harness/config.py): every field is a flag, shown in
`--help` with its help text and default, and a field added to a dataclass is a flag with nothing else written.
Runs `main()` in-process; no model is loaded (run_eval and run_transfer are replaced)."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import from_config
from harness.config import (
    OPTION,
    EvalConfig,
    MergeConfig,
    PromptsConfig,
    ReportConfig,
    TasksConfig,
    TransferConfig,
    W2SConfig,
    comma_ints,
    option,
)
from harness.errors import HarnessError
from harness.model_catalog import DEFAULT_MODEL
from tests.test_misuse import run_cli

COMMANDS = {"eval": EvalConfig, "transfer": TransferConfig, "report": ReportConfig, "tasks": TasksConfig}
COMMANDS |= {"prompts": PromptsConfig, "w2s": W2SConfig, "merge": MergeConfig}


def _help_text(args: list[str], capsys, monkeypatch) -> str:
    """`harness ARGS --help` on one line per option: wide enough that rich wraps nothing, box lines removed."""
    monkeypatch.setenv("COLUMNS", "1000")
    code, out, err = run_cli([*args, "--help"], capsys, monkeypatch)
    assert code == 0, err
    return " ".join(out.replace("│", " ").split())


def _default_text(f: dataclasses.Field) -> str | None:
    """The default as `--help` should show it, from the dataclass alone; None: no default shown."""
    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is dataclasses.MISSING:
        return "required"
    if value is None or value == []:
        return None
    if isinstance(value, bool):
        flag = f.name.replace("_", "-")
        return flag if value else f"no-{flag}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_is_a_flag_with_its_help_and_default(command, capsys, monkeypatch):
    config = COMMANDS[command]
    text = _help_text([command], capsys, monkeypatch)
    for f in dataclasses.fields(config):
        assert OPTION in f.metadata, f"{config.__name__}.{f.name} is not defined with option(): every field is a flag"
        spec = f.metadata[OPTION]
        # an argument shows as its name (`out`); a flag as itself
        name = f.name if spec.argument else spec.flag or "--" + f.name.replace("_", "-")
        assert re.search(rf"(^| ){re.escape(name)}( |$)", text), f"{name} is not in `harness {command} --help`"
        if spec.short:
            assert f" {spec.short} " in text, spec.short
        line = " ".join(spec.help.split())
        assert line in text, f"{name}'s help is not in `harness {command} --help`"
        shown = _default_text(f)
        if shown == "required":
            assert f"{line} [required]" in text, name
        elif shown is None:
            assert f"{line} [default:" not in text, name
        else:
            assert f"{line} [default: {shown}]" in text, f"{name}: no [default: {shown}]"


def test_defaults_live_in_the_dataclass():
    """What the CLI used to write twice: no --model means the default model; transfer has its default tasks."""
    assert EvalConfig().models == [DEFAULT_MODEL] and TransferConfig().models == [DEFAULT_MODEL]
    assert EvalConfig().shots == [0, 1, 4] and EvalConfig().permuted_label_check == ["ptune", "bitfit", "probe", "ccs"]
    assert len(TransferConfig().tasks) == 8
    first, second = EvalConfig(), EvalConfig()
    first.shots.append(8)  # a list default is each instance's own
    assert second.shots == [0, 1, 4]


def _ran(command: str, args: list[str], capsys, monkeypatch):
    """(the config `harness COMMAND ARGS` would run with, the command line it would store)."""
    seen = []
    module = "harness.evaluate.run_eval" if command == "eval" else "harness.transfer.run_transfer"
    monkeypatch.setattr(module, lambda cfg, console, line: seen.append((cfg, line)) or "report.md")
    code, _, err = run_cli([command, *args], capsys, monkeypatch)
    assert code == 0, err
    (ran,) = seen
    return ran


def test_flags_become_the_config(capsys, monkeypatch):
    args = ["--tasks", " rte, cb ,", "--shots", "0,2", "-m", "a", "--model", "b", "--set", "ptune.lr=1", "--set"]
    args += ["bitfit.lr=2", "--tasks-dir", "x", "--random-init-baseline", "none", "--random-label-shots", "NONE"]
    args += ["--train-sizes", "8,All", "--limit", "5", "--trust-remote-code", "--out", "some where"]
    cfg, line = _ran("eval", args, capsys, monkeypatch)
    assert cfg == EvalConfig(
        models=["a", "b"],
        tasks=["rte", "cb"],
        shots=[0, 2],
        overrides=["ptune.lr=1", "bitfit.lr=2"],
        tasks_dirs=["x"],
        random_init_baseline=[],
        random_label_shots=[],
        train_sizes=[8, "all"],
        limit=5,
        trust_remote_code=True,
        out="some where",
    )
    assert line.startswith("harness eval --tasks ' rte, cb ,' --shots 0,2 -m a --model b --set ptune.lr=1 --set")
    assert line.endswith(" --trust-remote-code --out 'some where'")
    assert _ran("eval", [], capsys, monkeypatch) == (EvalConfig(), "harness eval")
    cfg, _ = _ran("transfer", ["--tasks", "rte,cb", "--target-lr", "1e-3", "--fewglue-dir", "f"], capsys, monkeypatch)
    assert cfg == TransferConfig(tasks=["rte", "cb"], target_lr=1e-3, fewglue_dir="f")
    assert _ran("transfer", [], capsys, monkeypatch) == (TransferConfig(), "harness transfer")


def _toy_command(config: type) -> tuple[typer.Typer, list]:
    seen: list = []
    app = typer.Typer(add_completion=False)
    app.command("run")(from_config(config)(seen.append))
    app.command("other")(lambda: None)  # two commands: `run` is a subcommand, as in harness
    return app, seen


def test_a_field_added_to_a_config_is_a_flag():
    """One field, nothing else: its flag, help, default, parser and the config it fills."""
    extended = dataclasses.make_dataclass(
        "Extended",
        [
            ("warmup_steps", int, option(5, help="Warm-up steps before the first update.")),
            ("probe_layers", list[int], option([1, 2], parse=comma_ints, help="Layers to probe.")),
        ],
        bases=(EvalConfig,),
    )
    app, seen = _toy_command(extended)
    runner = CliRunner()
    shown = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "1000"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.replace("│", " ").split())
    assert "--warmup-steps <int> Warm-up steps before the first update. [default: 5]" in text
    assert "--probe-layers <str> Layers to probe. [default: 1,2]" in text
    assert "--shots" in text  # the base class's flags are there too

    ran = runner.invoke(app, ["run", "--warmup-steps", "7", "--probe-layers", "3,4", "--shots", "0", "-m", "x"])
    assert ran.exit_code == 0, ran.output
    assert seen == [extended(warmup_steps=7, probe_layers=[3, 4], shots=[0], models=["x"])]
    assert runner.invoke(app, ["run"]).exit_code == 0 and seen[-1] == extended()

    bad = runner.invoke(app, ["run", "--probe-layers", "3,x"])
    assert isinstance(bad.exception, HarnessError)
    assert str(bad.exception) == "--probe-layers expects comma-separated integers, got '3,x'"


def test_a_field_the_command_line_cannot_read_is_refused_when_the_command_is_built():
    @dataclasses.dataclass
    class Odd:
        pairs: dict[str, int] = option(None, help="No flag reads a dict without a parser.")

    with pytest.raises(TypeError, match=r"Odd.pairs: a dict\[str, int\] option needs parse="):
        from_config(Odd)
