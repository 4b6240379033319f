"""On CPU, the few-row matrix products of a chunk step on the kernels that are fast for few rows."""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionMultiHeadAttention

log = logging.getLogger(__name__)

MIN_WEIGHT_BYTES = 1 << 20  # between the demo model's largest weight (256 KB) and the 0.6B's smallest (4 MB)


@functools.cache
def log_choice(chosen: int, products: int, min_weight_bytes: int) -> None:
    """Once per process and choice: which products stream on the few-row kernels."""
    log.info(
        "streaming on CPU: few-row kernels for %d of %d matrix products (those with weights of at least %.1f MB)",
        chosen,
        products,
        min_weight_bytes / 1e6,
    )


class FewRowKernels:
    """On CPU, the encoder's matrix products of few rows with large weights on the kernels fast for them, while
    streaming.

    A chunk step multiplies every weight by only streams x chunk-frames rows, which should cost about one read of
    the weights. On CPU two kernels are slow at that when the weights come from memory: oneDNN's 1x1 convolution
    of a few frames, and MKL's ``x @ W.T`` of a few rows, where ``W @ x.T`` is the same products on another
    kernel. So the pointwise convolutions run as matrix products, and products of at most ``MAX_ROWS`` rows as
    ``W @ x.T``; the arithmetic is the same, only the summation order inside a kernel may differ. Only weights of
    at least ``MIN_WEIGHT_BYTES`` take them: small weights stay in cache, where MKL's own kernel is as fast or
    faster. Measured by ``scripts/profile_streaming_step.py`` on a 2-core x86 VM (torch 2.13, MKL 2024.2,
    oneDNN 3.12), see docs/benchmarks.md: on the 0.6B architecture (weights of 4-16 MB) the kernels make a step
    faster, on the demo model (weights of 64-256 KB) they made it 9 % slower, so they are off there. Off on a GPU.
    """

    MAX_ROWS = 64  # few rows: up to 8 streams of a 560 ms chunk (7 frames); larger products keep MKL's own kernel

    def __init__(self, encoder, min_weight_bytes: int = MIN_WEIGHT_BYTES):
        modules = list(encoder.layers.modules()) if next(encoder.parameters()).device.type == "cpu" else []
        positional = {id(m.linear_pos) for m in modules if isinstance(m, RelPositionMultiHeadAttention)}
        linears = [m for m in modules if type(m) is torch.nn.Linear and id(m) not in positional]
        pointwise = [
            m
            for m in modules
            if type(m) is torch.nn.Conv1d
            and m.kernel_size == (1,)
            and m.stride == (1,)
            and m.padding == (0,)
            and m.dilation == (1,)
            and m.groups == 1
        ]
        large = lambda m: m.weight.numel() * m.weight.element_size() >= min_weight_bytes  # noqa: E731
        self.linears = [m for m in linears if large(m)]
        self.pointwise = [m for m in pointwise if large(m)]
        if modules:
            log_choice(len(self.linears) + len(self.pointwise), len(linears) + len(pointwise), min_weight_bytes)

    def __enter__(self) -> "FewRowKernels":
        for linear in self.linears:
            linear.forward = self._linear(linear.weight, linear.bias)  # shadows the class method on this instance
        for conv in self.pointwise:
            conv.forward = self._pointwise(conv)
        return self

    def __exit__(self, *exc) -> None:
        for module in self.linears + self.pointwise:
            module.__dict__.pop("forward", None)

    @classmethod
    def _product(cls, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        if rows.size(0) > cls.MAX_ROWS:
            return F.linear(x, weight, bias)
        out = torch.mm(weight, rows.t()) if bias is None else torch.addmm(bias[:, None], weight, rows.t())
        return out.t().reshape(*x.shape[:-1], weight.size(0))

    @classmethod
    def _linear(cls, weight, bias):
        return lambda x: cls._product(x, weight, bias)

    @classmethod
    def _pointwise(cls, conv: torch.nn.Conv1d):
        return lambda x: cls._product(x.transpose(1, 2), conv.weight[:, :, 0], conv.bias).transpose(1, 2)
