import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

# MuJoCo picks its OpenGL platform at import, and test modules import it before metarobot can
# choose one: headless runs render through EGL (tests/test_render.py)
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"
