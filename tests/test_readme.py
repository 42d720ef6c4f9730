"""The README's code blocks run as written: its Python blocks are executed, and every
`metarobot ...` command of its shell blocks is parsed by the command line's parser (flags
that exist, values in range) without running the job."""

import re
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


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(README.parent)  # paths in the README are the repository's
    code = blocks("python")[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "readme"})


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
