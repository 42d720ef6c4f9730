"""metarobot: meta-train robot controllers on families of MuJoCo tasks.

A C++ core runs many simulations of a task family at once with the policy in the loop;
PyTorch meta-learners adapt controllers to new tasks in a few gradient steps.
"""

MUJOCO_VERSION = "4.0.0"  # the one MuJoCo release the C++ core is compiled against

import os as _os

# MuJoCo picks its OpenGL platform when imported; without a display its default (GLFW) cannot
# render, so headless machines get EGL unless the user chose (metarobot.render, docs images)
if "MUJOCO_GL" not in _os.environ and not _os.environ.get("DISPLAY"):
    _os.environ["MUJOCO_GL"] = "egl"

import mujoco as _mujoco  # noqa: E402

if _mujoco.__version__ != MUJOCO_VERSION:
    raise ImportError(
        f"metarobot needs MuJoCo {MUJOCO_VERSION} (its C++ core is compiled against that "
        f"release's struct layouts), but mujoco {_mujoco.__version__} is installed: "
        f"pip install mujoco=={MUJOCO_VERSION}")

from . import _core  # noqa: E402

if _core.mujoco_library_version() != _core.MUJOCO_HEADER_VERSION:
    raise ImportError(
        f"metarobot's core was compiled against MuJoCo {_core.MUJOCO_HEADER_VERSION} but runs "
        f"on libmujoco {_core.mujoco_library_version()}: reinstall metarobot")

from .families import Task, TaskFamily, list_families, make_family, register_family  # noqa: E402
from .batch import BatchSim, Trajectories  # noqa: E402
from .policy import GaussianMLPPolicy  # noqa: E402
from .returns import cuda_available, discounted_returns, gae  # noqa: E402
from . import terms  # noqa: E402
from . import terrain  # noqa: E402
from . import gym_envs as _gym_envs  # noqa: E402

_gym_envs.register_all()

__version__ = "0.1.0"
__all__ = [
    "BatchSim", "GaussianMLPPolicy", "Task", "TaskFamily", "Trajectories", "list_families",
    "make_family", "register_family", "terms", "terrain", "MUJOCO_VERSION", "gae",
    "discounted_returns",
    "cuda_available",
]
