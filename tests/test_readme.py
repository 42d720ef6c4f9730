"""The README's code blocks run as written: its Python blocks are executed, the values their
comments show (shapes, dtypes, reprs, counts) are what the code gives, and every `metarobot
...` command of its shell blocks is parsed by the command line's parser (flags that exist,
values in range) without running the job."""

import ast
import io
import re
import tokenize
import shlex
from pathlib import Path

import pytest

from metarobot import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language):
    text = README.read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_readme_has_python_and_shell_blocks():
    assert blocks("python") and blocks("bash")


def shown_value_mismatch(comment, value, base):
    """Why value does not match what a comment shows ('(200, 800, 20) float32': a shape and
    dtype; '[Task(...), ...]': the start of its repr; '800 simulations': a simulation
    count), None if it does; 'prose' for a comment that shows no value."""
    shape = re.match(r"\((\d+(?:, \d+)*)\)(?: (\w+))?", comment)
    if shape:
        want = tuple(int(x) for x in shape.group(1).split(", "))
        got = tuple(value) if isinstance(value, tuple) else tuple(value.shape)
        if got != want:
            return f"shape {got}, shown {want}"
        dtype = shape.group(2)
        if dtype and str(getattr(base, "dtype", "")) != dtype:
            return f"dtype {getattr(base, 'dtype', None)}, shown {dtype}"
        return None
    if comment.startswith("["):
        prefix = comment.split(", ...")[0]
        return None if repr(value).startswith(prefix) else \
            f"repr {repr(value)[:80]}, shown {prefix}"
    count = re.match(r"(\d+) simulations", comment)
    if count:
        return None if value.num_envs == int(count.group(1)) else \
            f"{value.num_envs} simulations, shown {count.group(1)}"
    return "prose"


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_block_runs_and_shows_what_it_gives(index, tmp_path, monkeypatch):
    monkeypatch.chdir(README.parent)  # paths in the README are the repository's
    code = blocks("python")[index]
    comments = {tok.start[0]: tok.string.lstrip("# ").strip()
                for tok in tokenize.generate_tokens(io.StringIO(code).readline)
                if tok.type == tokenize.COMMENT}
    namespace = {"__name__": "readme"}
    checked = 0
    for stmt in ast.parse(code).body:  # one statement at a time, each checked after it runs
        exec(compile(ast.Module([stmt], []), f"README.md python block {index}", "exec"),
             namespace)
        comment = comments.get(stmt.end_lineno)
        if comment is None:
            continue
        if isinstance(stmt, ast.Expr):
            value = eval(compile(ast.Expression(stmt.value), "readme", "eval"), namespace)
            node = stmt.value
            base = eval(compile(ast.Expression(node.value), "readme", "eval"), namespace) \
                if isinstance(node, ast.Attribute) and node.attr == "shape" else value
        elif isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            value = base = namespace[stmt.targets[0].id]
        else:
            continue
        why = shown_value_mismatch(comment, value, base)
        if why != "prose":
            assert why is None, f"README line {stmt.end_lineno} of block {index}: {why}"
            checked += 1
    if index == 0:
        assert checked >= 4  # the shapes, dtype, tasks and simulations the first block shows


def commands():
    """Every `metarobot ...` command: lines of shell blocks and inline code spans."""
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip().rstrip("&").strip()  # & : in the background
            if line.startswith("metarobot "):
                out.append(line)
    out += re.findall(r"`(metarobot [^`]+)`", README.read_text())
    return out


def test_readme_names_several_commands():
    names = {line.split()[1] for line in commands()}
    assert {"train", "evaluate", "adapt", "render"} <= names


@pytest.mark.parametrize("line", [c for c in commands() if len(c.split()) > 2])
def test_readme_command_parses(line):
    argv = shlex.split(line)[1:]
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            cli.build_parser().parse_args(argv)
        assert exit_info.value.code == 0
        return
    args = cli.build_parser().parse_args(argv)
    assert callable(args.func)
