import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# MuJoCo picks its OpenGL platform at import, and test modules import it before metarobot can
# choose one: headless runs render through EGL (tests/test_render.py)
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_registries():
    """Each test leaves the family registry and the warned-once record as it found them, so
    that no test depends on another's order (a family registered, a warning already said)."""
    from metarobot import families, task_family
    registered = dict(families._FAMILIES)
    warned = set(task_family._WARNED_OUTSIDE)
    yield
    families._FAMILIES.clear()
    families._FAMILIES.update(registered)
    task_family._WARNED_OUTSIDE.clear()
    task_family._WARNED_OUTSIDE.update(warned)
