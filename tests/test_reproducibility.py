"""Training runs the same kernels on every x86 machine: TensorFlow's oneDNN switch is set, not left to the CPU."""

from __future__ import annotations

import os
import subprocess
import sys


def _onednn_setting(environ: dict[str, str]) -> str:
    code = "import lookalike, os; print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_onednn_is_on_unless_the_environment_says_otherwise() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    assert _onednn_setting(environ) == "1"
    assert _onednn_setting({**environ, "TF_ENABLE_ONEDNN_OPTS": "0"}) == "0"


def test_the_setting_reaches_tensorflow_before_it_loads() -> None:
    """lookalike/__init__ runs before any module that imports TensorFlow, whichever a stage imports first."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    code = ("import sys; import lookalike.model.network, os; "
            "from tensorflow.python.util import _pywrap_util_port as port; "
            "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")
    out = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["1", "True"]
