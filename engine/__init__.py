"""Sensei's engine: specs, store, jobs, data, teachers, training and evaluation (no Streamlit)."""

import logging


class _MissingCpuKernelNotice(logging.Filter):
    """Drops bitsandbytes' notice that the optional ``kernels`` package is not installed.

    transformers' Trainer imports peft whenever it is installed, and peft imports bitsandbytes
    eagerly, so every training worker (and every CLI command that loads training code) began
    with ``Failed to load CPU gemm_4bit_forward ... No module named 'kernels'``. That kernel is
    a CPU fast path for 4-bit matmuls, which Sensei never takes: quantized (QLoRA) training is
    CUDA-only (:func:`engine.training.student.require_quantization_support`). Only this one
    message is dropped; bitsandbytes itself still loads, and its other warnings still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")


# Before anything imports bitsandbytes: it logs the notice while its module is being imported.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_MissingCpuKernelNotice())
