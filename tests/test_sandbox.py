"""Templates are user input and stay sandboxed: known escapes from jinja2 templates (attribute walks to
`__subclasses__` or `__globals__`, str.format and printf tricks, showing a Python object) and known ways to exhaust
memory or time (`range(10**10)`, `'a' * 10**10`, a doubling macro) each end in one line naming the prompt file and
template, exit code 2, without running, leaking a Python repr or hanging. Rendered through `harness prompts` on a
real RTE example; the ones that could exhaust the machine run in a child process with a memory cap and a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.prompts import MAX_CHARS, load_prompts
from harness.tasks import Example
from tests.test_misuse import run_cli

# (template text, words of the one-line error after "template 'evil': ")
ESCAPES = {
    "subclasses of object": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),
    "subclasses through a field": ("{{ premise.__class__.__base__.__subclasses__() }}", "SecurityError"),
    "attr filter": ("{{ (premise|attr('__class__')).__mro__ }}", "SecurityError"),
    "item lookup of a dunder": ("{{ premise['__class__'] }}", "SecurityError"),
    "globals of a global": ("{{ cycler.__init__.__globals__ }}", "SecurityError"),
    "os through joiner": ("{{ joiner.__init__.__globals__['os'].popen('id').read() }}", "SecurityError"),
    "os through lipsum": ("{{ lipsum.__globals__['os'].popen('id').read() }}", "'lipsum' is undefined"),
    "globals of range": ("{{ range.__init__.__globals__ }}", "SecurityError"),
    "globals of self": ("{{ self.__init__.__globals__ }}", "SecurityError"),
    "context of self": ("{{ self._TemplateReference__context }}", "SecurityError"),
    "owner of a method": ("{{ premise.upper.__self__ }}", "has no attribute '__self__'"),
    "format field walk": ("{{ '{0.__class__.__mro__}'.format(premise) }}", "SecurityError"),
    "format_map field walk": ("{{ '{a.__class__}'.format_map({'a': premise}) }}", "SecurityError"),
    "format to globals": ("{{ '{0.__init__.__globals__}'.format(self) }}", "SecurityError"),
    "printf of a dunder": ("{{ '%s'|format(premise.__class__) }}", "SecurityError"),
    "printf of a global": ("{{ '%s'|format(namespace) }}", "cannot show a function"),
    "percent operator repr": ("{{ '%r' % (dict,) }}", "cannot show a function"),
    "format repr": ("{{ '{!r}'.format(premise.upper) }}", "cannot show a function"),
    "a global shown": ("{{ range }}", "cannot show a function"),
    "a method shown": ("{{ premise.upper }}", "cannot show a function"),
    "string filter": ("{{ dict|string }}", "cannot show a function"),
    "methods by attribute": ("{{ [premise]|map(attribute='upper')|join }}", "cannot show a function"),
    "in-place mutation": ("{% set seen = [premise] %}{{ seen.append(seen) }}", "SecurityError"),
}

# the same, for templates that would exhaust memory or time if let through
EXHAUSTION = {
    "huge range": ("{{ range(10**10)|list }}", "range() of 10,000,000,000 items"),
    "nested ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "range items in all",
    ),
    "huge repetition": ("{{ 'a' * 10**10 }}", "'*' would build 10,000,000,000"),
    "huge list repetition": ("{{ [premise] * 10**10 }}", "'*' would build 10,000,000,000"),
    "huge power": ("{{ 10 ** (10 ** 10) }}", "'**' would make an integer"),
    "huge width": ("{{ premise|center(10**10) }}", "center() with a width"),
    "huge format width": ("{{ '{:>10000000000}'.format(premise) }}", "a format width of 10,000,000,000"),
    "huge printf width": ("{{ '%*s' % (10**10, premise) }}", "a format width taken from the arguments"),
    "doubling macro": (
        "{% macro grow(s, n) %}{{ grow(s ~ s, n - 1) if n else s|length }}{% endmacro %}{{ grow(premise, 64) }}",
        "an argument holds",
    ),
    "doubling namespace": (
        "{% set ns = namespace(s=premise) %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
        "{{ ns.s|length }}",
        "attribute 's' holds",
    ),
    "endless output": ("{% for i in range(100000) %}{{ premise * 100 }}{% endfor %}", "the rendered text passes"),
    "replace blow-up": ("{{ (premise * 1000)|replace(' ', premise * 1000) }}", "replace() would build"),
}

LEAKS = ("<class", " object at 0x", "<function", "<built-in", "<bound method", "<module")


def _prompt_folder(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir(exist_ok=True)
    body = {"templates": [{"name": "evil", "text": text, "choices": ["True", "False"]}]}
    (folder / "rte.yaml").write_text(yaml.safe_dump(body))
    return folder


def _assert_refused(code: int, out: str, err: str, folder: Path, words: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    line = lines[0]
    assert line.startswith(f"error: {folder / 'rte.yaml'}: template 'evil': "), line
    assert words in line, line
    assert "MemoryError" not in line and "Timeout" not in line, line
    assert not any(leak in out + err for leak in LEAKS), out + err
    assert not out.strip(), out  # nothing rendered


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escape_is_refused_in_one_line(case, tmp_path, superglue_dir, capsys, monkeypatch):
    text, words = ESCAPES[case]
    folder = _prompt_folder(tmp_path, text)
    args = ["prompts", "rte", "--prompts-dir", str(folder), "--data-dir", str(superglue_dir)]
    code, out, err = run_cli(args, capsys, monkeypatch)
    _assert_refused(code, out, err, folder, words)


# A child process whose address space is capped at 4 GiB: if a limit broke, the template fails there (MemoryError,
# which the test refuses as a pass) instead of taking the machine's memory.
CAPPED = """
import resource, sys
try:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
except (ValueError, OSError):
    pass
from harness.cli import main
sys.argv[0] = "harness"
main()
"""


@pytest.mark.parametrize("case", sorted(EXHAUSTION))
def test_exhaustion_is_refused_quickly(case, tmp_path, superglue_dir):
    text, words = EXHAUSTION[case]
    folder = _prompt_folder(tmp_path, text)
    args = ["prompts", "rte", "--prompts-dir", str(folder), "--data-dir", str(superglue_dir)]
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CAPPED, *args], env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    # the refusal itself takes milliseconds; the rest is starting Python on a busy machine
    assert time.perf_counter() - start < 60
    _assert_refused(result.returncode, result.stdout, result.stderr, folder, words)


def test_eval_refuses_an_escaping_template_before_the_model_loads(tmp_path, superglue_dir, capsys, monkeypatch):
    folder = _prompt_folder(tmp_path, "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    args = ["eval", "--model", "no-such-model", "--tasks", "rte", "--limit", "2", "--shots", "0"]
    args += ["--prompts-dir", str(folder), "--data-dir", str(superglue_dir), "--out", str(tmp_path / "out")]
    code, out, err = run_cli(args, capsys, monkeypatch)
    _assert_refused(code, out, err, folder, "SecurityError: access to attribute '__class__' of 'str' object")


def test_what_a_prompt_needs_still_renders(tmp_path):
    """The limits and the hidden functions leave ordinary templates alone: loops, ranges, dicts, namespaces,
    filters, string methods and both kinds of formatting."""
    text = (
        "{% set ns = namespace(n=0) %}{% for h in hs %}{% set ns.n = ns.n + loop.index %}{{ h|upper }};{% endfor %}"
        "{{ ns.n }} {{ range(3)|join(',') }} {{ dict(a=1)['a'] }} {{ premise.strip().split()|length }} "
        "{{ '%s-%03d' % (hypothesis, 7) }} {{ '{:>4}|{}'.format('x', premise|trim) }} "
        "{{ loop_free|default('-') }} {{ (premise * 2)|length }} {{ 2 ** 10 }} {{ [1, 2] + [3] }}"
    )
    folder = _prompt_folder(tmp_path, text)
    example = Example("0", {"premise": " A cat sat. ", "hypothesis": "H", "hs": ["x", "y"]}, 0, "0")
    rendered, choices = load_prompts("rte", folder).get("evil").render(example)
    assert rendered == "X;Y;3 0,1,2 1 3 H-007    x|A cat sat. - 24 1024 [1, 2, 3]"
    assert choices == ["True", "False"]


def test_long_real_text_is_within_the_limits(tmp_path):
    """A field of 200,000 characters (far beyond any SuperGLUE passage) renders; the cap is on what templates
    build, at MAX_CHARS."""
    folder = _prompt_folder(tmp_path, "{{ premise }} {{ premise|length }} {{ premise.replace('a', 'b')|length }}")
    example = Example("0", {"premise": "a" * 200_000, "hypothesis": "H"}, 0, "0")
    rendered, _ = load_prompts("rte", folder).get("evil").render(example)
    assert rendered == "a" * 200_000 + " 200000 200000"
    too_long = Example("1", {"premise": "a" * (MAX_CHARS + 1), "hypothesis": "H"}, 0, "1")
    with pytest.raises(HarnessError, match=r"rte\.yaml: template 'evil': SecurityError: .* on example 1"):
        load_prompts("rte", folder).get("evil").render(too_long)
