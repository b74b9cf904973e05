"""Every misuse of the command line is one line on stderr and exit code 2, never a traceback: a mistyped option or
command (with the closest valid name), a missing or mistyped value, a number out of range, an empty list. Each
message of `validate()` (harness/evaluate.py, harness/transfer.py) is here. The cases run `main()` in-process
(seconds for all of them); a few run `python -m harness` as a user does, through tests/test_cli.py's helper."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from harness.cli import main
from tests.test_cli import harness


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `harness ARGS` run in this process."""
    monkeypatch.setattr(sys, "argv", ["harness", *args])
    handler = signal.getsignal(signal.SIGTERM)  # main() may install its own; this process keeps pytest's
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def assert_one_line(code: int, err: str, flag: str, message: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    assert flag in lines[0], lines[0]
    assert message in lines[0], lines[0]
    return lines[0]


# (arguments after `harness eval`, the flag the line names, words of the message)
EVAL_MISUSE = {
    # validate(), harness/evaluate.py: one case per message
    "model empty": (["--model", ""], "--model", "--model is empty"),
    "suite empty": (["--suite", ""], "--suite", "--suite is empty"),
    "device empty": (["--device", " "], "--device", "--device is empty"),
    "dtype empty": (["--dtype", ""], "--dtype", "--dtype is empty"),
    "out empty": (["--out", ""], "--out", "--out is empty"),
    "data-dir empty": (["--data-dir", ""], "--data-dir", "--data-dir is empty"),
    "train-set empty": (["--train-set", ""], "--train-set", "--train-set is empty"),
    "fewglue-dir empty": (["--fewglue-dir", ""], "--fewglue-dir", "--fewglue-dir is empty"),
    "prompts-dir empty": (["--prompts-dir", ""], "--prompts-dir", "--prompts-dir is empty"),
    "presets-dir empty": (["--presets-dir", ""], "--presets-dir", "--presets-dir is empty"),
    "tasks empty": (["--tasks", ","], "--tasks", "--tasks is empty"),
    "templates empty": (["--templates", ""], "--templates", "--templates is empty"),
    "methods empty": (["--methods", ","], "--methods", "--methods is empty: choose from prompt, ptune"),
    "methods unknown": (["--methods", "prompt,magic"], "--methods", "unknown method 'magic'"),
    "shots empty": (["--shots", ""], "--shots", "--shots is empty"),
    "shots negative": (["--shots", "0,-1"], "--shots", "non-negative integers, not -1"),
    "shots negative alone": (["--shots=-2"], "--shots", "non-negative integers, not -2"),
    "random-label-shots not in shots": (
        ["--shots", "0,1", "--random-label-shots", "4"],
        "--random-label-shots",
        "subset of --shots: 4 is not in --shots",
    ),
    "seeds zero": (["--seeds", "0"], "--seeds", "--seeds must be at least 1, not 0"),
    "seeds negative": (["--seeds", "-3"], "--seeds", "--seeds must be at least 1, not -3"),
    "limit zero": (["--limit", "0"], "--limit", "--limit must be at least 1, not 0"),
    "batch-size zero": (["--batch-size", "0"], "--batch-size", "--batch-size must be at least 1, not 0"),
    "demo-selection unknown": (["--demo-selection", "best"], "--demo-selection", "'random' or 'first', not 'best'"),
    "train-sizes empty": (["--train-sizes", ","], "--train-sizes", "--train-sizes is empty"),
    "train-sizes one": (["--train-sizes", "8,1"], "--train-sizes", "at least 2 or 'all', not 1"),
    "random-init-baseline unknown": (
        ["--random-init-baseline", "prompt"],
        "--random-init-baseline",
        "unknown method 'prompt' (--random-init-baseline)",
    ),
    "set malformed": (["--set", "ptune.max_steps"], "--set", "expected METHOD.KEY=VALUE"),
    # check_device_map() and harness/device_map.py
    "device-map empty": (["--device-map", " "], "--device-map", "--device-map is empty"),
    "device-map bad JSON": (["--device-map", '{"lm_head": cpu}'], "--device-map", "invalid JSON at character 13"),
    "device-map not a mapping": (["--device-map", "{}"], "--device-map", "expected a non-empty mapping"),
    "device-map bad device": (["--device-map", '{"": "gpu"}'], "--device-map", "module '' has device 'gpu'"),
    "device-map neither": (["--device-map", "everywhere"], "--device-map", "must be auto, balanced"),
    "device-map file missing": (["--device-map", "no/map.yaml"], "--device-map", "no/map.yaml not found"),
    "device-map with device": (
        ["--device-map", "auto", "--device", "cpu"],
        "--device-map",
        "places the model itself: leave out --device cpu",
    ),
    "device-map offloads tuned": (
        ["--device-map", '{"model": "disk", "lm_head": "cpu"}', "--methods", "prompt,bitfit"],
        "--device-map",
        "offloads modules to cpu or disk, where bitfit cannot train",
    ),
    # the CLI's list helpers
    "shots not integers": (["--shots", "0,x"], "--shots", "expects comma-separated integers, got '0,x'"),
    "train-sizes not integers": (["--train-sizes", "8,many"], "--train-sizes", "integers or 'all', got '8,many'"),
    "random-label-shots empty": (["--random-label-shots", ""], "--random-label-shots", "is empty"),
    "random-label-shots not integers": (["--random-label-shots", "x"], "--random-label-shots", "got 'x'"),
    "random-init-baseline empty": (["--random-init-baseline", ","], "--random-init-baseline", "is empty"),
    "permuted-label-check unknown": (
        ["--permuted-label-check", "prompt"],
        "--permuted-label-check",
        "unknown method 'prompt' (--permuted-label-check)",
    ),
    "permuted-label-check empty": (["--permuted-label-check", ","], "--permuted-label-check", "is empty"),
    # click: options, values, types
    "option typo": (["--task", "rte"], "--task", "no option --task for `harness eval`; did you mean --tasks?"),
    "option typo with value": (["--task-dir", "x"], "--task-dir", "no option --task-dir for `harness eval`"),
    "tasks-dir not a folder": (["--tasks-dir", "no/such/folder"], "--tasks-dir", "task folder not found: no/such"),
    "option far from any": (["--zzzzzz"], "--zzzzzz", "`harness eval --help` lists the options"),
    "seeds not a number": (["--seeds", "x"], "--seeds", "--seeds expects an integer, got 'x'"),
    "limit not a number": (["--limit=abc"], "--limit", "--limit expects an integer, got 'abc'"),
    "batch-size a float": (["--batch-size", "1.5"], "--batch-size", "--batch-size expects an integer, got '1.5'"),
    "value missing": (["--seeds"], "--seeds", "--seeds needs a value"),
    "flag given a value": (["--trust-remote-code=yes"], "--trust-remote-code", "does not take a value"),
    "extra argument": (["rte"], "rte", "unexpected extra argument"),
}

TRANSFER_MISUSE = {
    # validate(), harness/transfer.py: one case per message
    "model empty": (["--model", ""], "--model", "--model is empty"),
    "device empty": (["--device", ""], "--device", "--device is empty"),
    "dtype empty": (["--dtype", ""], "--dtype", "--dtype is empty"),
    "out empty": (["--out", ""], "--out", "--out is empty"),
    "data-dir empty": (["--data-dir", ""], "--data-dir", "--data-dir is empty"),
    "train-set empty": (["--train-set", ""], "--train-set", "--train-set is empty"),
    "prompts-dir empty": (["--prompts-dir", ""], "--prompts-dir", "--prompts-dir is empty"),
    "presets-dir empty": (["--presets-dir", ""], "--presets-dir", "--presets-dir is empty"),
    "method unknown": (["--method", "probe"], "--method", "unknown method 'probe' (--method)"),
    "one task": (["--tasks", "rte"], "--tasks", "--tasks needs at least two tasks"),
    "no task": (["--tasks", ","], "--tasks", "--tasks needs at least two tasks"),
    "task twice": (["--tasks", "rte,cb,rte"], "--tasks", "--tasks lists a task twice"),
    "source-n small": (["--source-n", "3"], "--source-n", "--source-n must be at least 4, not 3"),
    "target-n zero": (["--target-n", "0"], "--target-n", "--target-n must be at least 1, not 0"),
    "source-steps zero": (["--source-steps", "0"], "--source-steps", "--source-steps must be at least 1, not 0"),
    "target-steps zero": (["--target-steps", "0"], "--target-steps", "--target-steps must be at least 1, not 0"),
    "source-eval-every zero": (["--source-eval-every", "0"], "--source-eval-every", "at least 1, not 0"),
    "seeds zero": (["--seeds", "0"], "--seeds", "--seeds must be at least 1, not 0"),
    "limit zero": (["--limit", "0"], "--limit", "--limit must be at least 1, not 0"),
    "target-lr zero": (["--target-lr", "0"], "--target-lr", "--target-lr must be positive, not 0.0"),
    "set unknown method": (["--set", "magic.steps=2"], "--set", "unknown method 'magic'"),
    "device-map empty": (["--device-map", ""], "--device-map", "--device-map is empty"),
    "device-map offloads": (["--device-map", '{"": "disk"}'], "--device-map", "where bitfit cannot train"),
    # click
    "target-lr not a number": (["--target-lr", "fast"], "--target-lr", "--target-lr expects a number, got 'fast'"),
    "option typo": (["--source-step", "3"], "--source-step", "did you mean --source-steps?"),
}


def _with_defaults(args: list[str], tmp_path: Path) -> list[str]:
    """A case's arguments plus an --out and a --data-dir in tmp_path: a case that slipped past the checks fails on
    the missing data folder at once (never the Hub), and the checks must refuse before --out is created."""
    extra = []
    if not any(a.startswith("--out") for a in args):
        extra += ["--out", str(tmp_path / "out")]
    if not any(a.startswith("--data-dir") for a in args):
        extra += ["--data-dir", str(tmp_path / "no-data")]
    # options first: "--seeds" with no value must stay last, and "rte" must stay an extra argument
    return extra + args


@pytest.mark.parametrize("case", sorted(EVAL_MISUSE))
def test_eval_misuse_is_one_line_exit_2(case, capsys, monkeypatch, tmp_path):
    args, flag, message = EVAL_MISUSE[case]
    code, _, err = run_cli(["eval", *_with_defaults(args, tmp_path)], capsys, monkeypatch)
    assert_one_line(code, err, flag, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(TRANSFER_MISUSE))
def test_transfer_misuse_is_one_line_exit_2(case, capsys, monkeypatch, tmp_path):
    args, flag, message = TRANSFER_MISUSE[case]
    code, _, err = run_cli(["transfer", *_with_defaults(args, tmp_path)], capsys, monkeypatch)
    assert_one_line(code, err, flag, message)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, name, message",
    [
        (["evl"], "evl", "no command 'evl' in `harness`; did you mean eval?"),
        (["tranfser"], "tranfser", "did you mean transfer?"),
        (["qqqq"], "qqqq", "commands are eval, transfer, w2s, report, merge, tasks, prompts, models"),
        (["--verbose", "eval"], "--verbose", "no option --verbose for `harness`"),
        (["prompts"], "TASK", "`harness prompts` needs TASK"),
        (["report"], "OUT", "`harness report` needs OUT"),
        (["prompts", "rte", "--example", "first"], "--example", "--example expects an integer, got 'first'"),
        (["prompts", "rte", "--exemple", "2"], "--exemple", "did you mean --example?"),
        (["tasks", "--prompt-dir", "x"], "--prompt-dir", "did you mean --prompts-dir?"),
        (["report", "a", "b"], "b", "unexpected extra argument"),
    ],
)
def test_other_misuse_is_one_line_exit_2(args, name, message, capsys, monkeypatch):
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert_one_line(code, err, name, message)


@pytest.mark.parametrize("args", [["--help"], ["eval", "--help"], ["transfer", "--help"], ["prompts", "--help"]])
def test_help_still_works(args, capsys, monkeypatch):
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    assert "Usage:" in out and "--help" in out
    assert "Traceback" not in out + err
    if args == ["eval", "--help"]:
        assert "--tasks" in out and "--train-sizes" in out


def test_bare_harness_shows_the_commands(capsys, monkeypatch):
    code, out, err = run_cli([], capsys, monkeypatch)
    assert code == 2
    assert "eval" in out + err and "transfer" in out + err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    "args, flag, message",
    [
        (["eval", "--task", "rte"], "--task", "did you mean --tasks?"),
        (["eval", "--seeds", "x"], "--seeds", "--seeds expects an integer, got 'x'"),
        (["eval", "--limit", "0"], "--limit", "--limit must be at least 1, not 0"),
    ],
)
def test_misuse_as_a_user_runs_it(args, flag, message, tmp_path):
    """The installed entry point, in a fresh process: the same one line, whatever the program is called."""
    result = harness(*args, "--out", str(tmp_path / "out"), env=dict(os.environ), timeout=120)
    assert_one_line(result.returncode, result.stderr, flag, message)
    assert not result.stdout.strip()
