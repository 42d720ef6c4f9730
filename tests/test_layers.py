"""The package's imports point one way: the layer contract in pyproject.toml holds (checked by
import-linter), and no module reaches a module that reaches it back."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    done = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in done.stdout


def test_no_import_cycle_among_the_modules():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("metarobot")
    # the package's __init__ imports its public names from below; the compiled core is
    # imported as `from . import _core`, which grimp records as the package itself
    modules = {m for m in graph.modules if m != "metarobot"}
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules}
             for m in modules}
    state, cycle = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                cycle.extend(path[path.index(n):] + [m, n] if n in path else [m, n])
                return True
            if n not in state and visit(n, path + [m]):
                return True
        state[m] = "done"
        return False
    for m in sorted(modules):
        if m not in state and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)
