"""Tasks with generated answers: arithmetic and list sorting made by the harness from a seed, and the GPT-3
arithmetic files (Brown et al. 2020) when a data folder has them.

Names carry the settings, so any digit count or list length is a task:
- `add-2d`, `sub-3d`, `mul-2d`, `div-2d`: two operands of that many digits (division is exact: a = b * q);
- `mixed-1d`: three operands joined by + and x, evaluated with the usual precedence;
- `add-2d-parity` (any arithmetic task + `-parity`): is the answer of the same problems even or odd? A class
  label, so every method applies to it, the probe included;
- `sort-5`: sort a list of that many integers (0-99) in ascending order;
- `gpt3-two-digit-addition` ...: a file `two_digit_addition.jsonl` of a `gpt3-arithmetic` folder.

Val and train come from different seeds, and no train problem repeats a val problem, so demos never give away
an eval answer.
"""

from __future__ import annotations

import functools
import json
import random
import re
from pathlib import Path

from harness.errors import HarnessError
from harness.lm_eval_tasks import OTHER_TARGETS, TARGET
from harness.resources import read_text
from harness.tasks import Example, TaskSpec, find_beside_data

VAL_POOL = 200  # eval examples per generated task without --limit
TRAIN_POOL = 512  # demos, template selection and training data (transfer's source runs take 200)
GPT3_TRAIN = 200  # lines of a GPT-3 file kept for train; the rest is val
GPT3_FOLDER = "gpt3-arithmetic"

_OPS = {"add": ("+", "plus"), "sub": ("-", "minus"), "mul": ("×", "times"), "div": ("÷", "divided by")}
_CODE_OPS = {"+": "+", "-": "-", "×": "*", "÷": "//"}
_ARITHMETIC = re.compile(r"^(add|sub|mul|div|mixed)-([1-9])d$")
_PARITY = re.compile(r"^((add|sub|mul|div|mixed)-[1-9]d)-parity$")
_SORTING = re.compile(r"^sort-([2-9]|1[0-9]|20)$")
# what a control task permutes between examples (an lm-eval task's gold is lm_eval_target)
ANSWER_FIELDS = ("answer", "sorted_list", "sorted_items", TARGET)


def arithmetic_max_new_tokens(name: str) -> int:
    """Tokens to decode for an arithmetic task's answer: its most digits, and a few to spare."""
    op, digits = _ARITHMETIC.match(name).groups()
    return (2 * int(digits) + 1 if op in ("mul", "mixed") else int(digits) + 1) + 4


def sorting_max_new_tokens(name: str) -> int:
    return 4 * int(_SORTING.match(name).group(1)) + 8


# ---------------------------------------------------------------- generators
def _operand(rng: random.Random, digits: int) -> int:
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)


def _arithmetic_fields(op: str, digits: int, rng: random.Random) -> dict:
    if op == "mixed":
        a, b, c = (_operand(rng, digits) for _ in range(3))
        ops = [rng.choice("+×") for _ in range(2)]
        expression = f"{a} {ops[0]} {b} {ops[1]} {c}"
        code = expression.replace("×", "*")
        answer = eval(code, {"__builtins__": {}})  # noqa: S307 - our own digits and operators only
        return {"a": a, "b": b, "c": c, "expression": expression, "code_expression": code,
                "words": expression, "answer": str(answer)}  # fmt: skip
    a, b = _operand(rng, digits), _operand(rng, digits)
    if op == "div":  # exact division: the divisor and the quotient have `digits` digits
        b, quotient = b or 1, a or 1
        a, answer = b * quotient, quotient
    else:
        answer = {"add": a + b, "sub": a - b, "mul": a * b}[op]
    symbol, word = _OPS[op]
    return {
        "a": a,
        "b": b,
        "expression": f"{a} {symbol} {b}",
        "code_expression": f"{a} {_CODE_OPS[symbol]} {b}",
        "words": f"{a} {word} {b}",
        "answer": str(answer),
    }


def _sorting_fields(length: int, rng: random.Random) -> dict:
    numbers = [rng.randrange(100) for _ in range(length)]
    ordered = sorted(numbers)
    return {
        "numbers": numbers,
        "list": str(numbers),
        "items": ", ".join(map(str, numbers)),
        "sorted_list": str(ordered),
        "sorted_items": ", ".join(map(str, ordered)),
        "answer": str(ordered),
    }


def _fields(name: str, rng: random.Random) -> dict:
    if m := _ARITHMETIC.match(name):
        return _arithmetic_fields(m.group(1), int(m.group(2)), rng)
    return _sorting_fields(int(_SORTING.match(name).group(1)), rng)


@functools.lru_cache(maxsize=64)
def _pool(name: str) -> tuple[str, ...]:
    """Distinct problems (as JSON) of task `name` in a seeded order: enough for both splits, or all there are."""
    rng = random.Random(f"{name}/pool")
    size = VAL_POOL + TRAIN_POOL
    seen: dict[str, None] = {}
    for _ in range(size * 50):  # small digit counts have few distinct problems: stop at what exists
        if len(seen) == size:
            break
        seen.setdefault(json.dumps(_fields(name, rng), sort_keys=True))
    return tuple(seen)


def generate_split(spec: TaskSpec, split: str) -> list[Example]:
    """The val or train pool of a generated task, deterministic in the task's name alone. Train takes the first
    TRAIN_POOL problems (at most half of a small problem space), val the next VAL_POOL: no problem is in both."""
    parity = _PARITY.match(spec.name)
    pool = _pool(parity.group(1) if parity else spec.name)
    n_train = TRAIN_POOL if len(pool) == VAL_POOL + TRAIN_POOL else len(pool) // 2  # a small space: half each
    chosen = [json.loads(f) for f in (pool[:n_train] if split == "train" else pool[n_train : n_train + VAL_POOL])]
    # a parity task's label: 0 = the answer is even, 1 = odd; a generated answer's one "choice" is index 0
    labels = [int(f["answer"]) % 2 if parity else 0 for f in chosen]
    return [Example(f"{split}-{i}", f, label, f"{split}-{i}") for i, (f, label) in enumerate(zip(chosen, labels))]


def random_answer_fields(spec: TaskSpec, fields: dict, rng: random.Random) -> dict:
    """The fields of a demo with a wrong answer of the right form: the random labels of a generated task.

    A number gets another number of as many digits (and the same sign); a sorted list gets a shuffled order; an
    lm-eval task's answer gets another document's (harness/lm_eval_tasks.py).
    """
    if OTHER_TARGETS in fields:
        return {**fields, TARGET: rng.choice(fields[OTHER_TARGETS])}
    if "numbers" in fields:
        numbers = list(fields["numbers"])
        ordered = sorted(numbers)
        if len(set(numbers)) > 1:
            while numbers == ordered:
                rng.shuffle(numbers)
        return {**fields, "sorted_list": str(numbers), "sorted_items": ", ".join(map(str, numbers)),
                "answer": str(numbers)}  # fmt: skip
    answer = fields["answer"]
    sign, digits = ("-", answer[1:]) if answer.startswith("-") else ("", answer)
    wrong = answer
    while wrong == answer and len(digits) > 0:
        wrong = sign + str(_operand(rng, len(digits)))
    return {**fields, "answer": wrong}


# ---------------------------------------------------------------- GPT-3 arithmetic files
def gpt3_folder(data_folder: Path | None) -> Path | None:
    """$HARNESS_GPT3_ARITHMETIC_DIR, or a `gpt3-arithmetic` folder in or beside the data folder."""
    return find_beside_data(data_folder, GPT3_FOLDER, "HARNESS_GPT3_ARITHMETIC_DIR", "GPT-3 arithmetic folder")


def gpt3_tasks(folder: Path | None) -> list[str]:
    """Task names of the GPT-3 arithmetic files found in `folder`."""
    if folder is None:
        return []
    return [f"gpt3-{p.stem.replace('_', '-')}" for p in sorted(folder.glob("*.jsonl"))]


def load_gpt3_split(spec: TaskSpec, folder: Path, split: str) -> list[Example]:
    """A GPT-3 file's lines, shuffled by a fixed seed: GPT3_TRAIN of them are train, the rest val."""
    path = folder / spec.folder
    if not path.is_file():
        raise HarnessError(f"{spec.name}: {path} not found")
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            context, completion = row["context"], row["completion"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise HarnessError(f'{path}:{lineno}: expected {{"context", "completion"}} ({err})') from None
        question = re.search(r"Q: (.*?)\s*A:\s*$", context, re.S)
        fields = {
            "context": context,
            "question": question.group(1).strip() if question else context.strip(),
            "answer": completion.strip(),
        }
        rows.append(Example(str(lineno), fields, 0, str(lineno)))
    random.Random(f"{spec.name}/split").shuffle(rows)
    return rows[:GPT3_TRAIN] if split == "train" else rows[GPT3_TRAIN:]
