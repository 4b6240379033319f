"""On CPU, the few-row matrix products of a chunk step on the kernels that are fast for few rows."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionMultiHeadAttention


class FewRowKernels:
    """On CPU, the encoder's matrix products of few rows on the kernels that are fast for them, while streaming.

    A chunk step multiplies every weight by only streams x chunk-frames rows, which should cost about one read of
    the weights. On CPU two kernels are slow at that: oneDNN's 1x1 convolution of a few frames, and MKL's
    ``x @ W.T`` of a few rows, where ``W @ x.T`` is the same products on another kernel. So the pointwise
    convolutions run as matrix products, and products of at most ``MAX_ROWS`` rows as ``W @ x.T``; the arithmetic
    is the same, only the summation order inside a kernel may differ. Measured by
    ``scripts/profile_streaming_step.py`` on the 0.6B architecture, 8 streams at 80 ms, a 2-core AMD EPYC (torch
    2.13, MKL 2024.2, oneDNN 3.12): a step took 737 ms with these kernels and 1,038 ms without. Off on a GPU
    (not measured there).
    """

    MAX_ROWS = 64  # few rows: up to 8 streams of a 560 ms chunk (7 frames); larger products keep MKL's own kernel

    def __init__(self, encoder):
        modules = list(encoder.layers.modules()) if next(encoder.parameters()).device.type == "cpu" else []
        positional = {id(m.linear_pos) for m in modules if isinstance(m, RelPositionMultiHeadAttention)}
        self.linears = [m for m in modules if type(m) is torch.nn.Linear and id(m) not in positional]
        self.pointwise = [
            m
            for m in modules
            if type(m) is torch.nn.Conv1d
            and m.kernel_size == (1,)
            and m.stride == (1,)
            and m.padding == (0,)
            and m.dilation == (1,)
            and m.groups == 1
        ]

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
