"""Loading training code does not print bitsandbytes' missing-``kernels`` notice; QLoRA still loads."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

import engine  # noqa: F401  (installs the filter, as every entry point does)

ROOT = Path(__file__).resolve().parents[1]


def test_training_imports_print_no_kernels_notice_and_bitsandbytes_still_loads() -> None:
    code = (
        "import engine, peft.helpers, transformers.utils as u\n"
        "print(peft.helpers.bnb is not None, u.is_bitsandbytes_available())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "kernels" not in out.stderr and "gemm_4bit" not in out.stderr, out.stderr
    assert out.stdout.split() == ["True", "True"]  # peft's QLoRA layers still see bitsandbytes


def test_only_the_kernels_notice_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...",
            ModuleNotFoundError("No module named 'kernels'"),
        )
        logger.warning("some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning"]
