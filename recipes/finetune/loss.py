"""A pure-PyTorch RNNT loss that is fast on CPU: NeMo's ``pytorch`` loss, vectorised over the label axis.

NeMo's ``RNNTLossPytorch`` fills the forward variables one lattice cell at a time (a Python loop over T x U
with autograd through every cell), so a 10 s utterance with 40 tokens costs 5,000 tiny autograd nodes; NeMo's
numba kernel is faster but still 60-100x slower than this on CPU (``scripts/bench_rnnt_loss.py``).
Here each time step is one vectorised update of the whole label axis:

    alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + emit[t, u-1])

unrolls over u into a log-cumulative sum. With E[u] = emit[t, 0] + ... + emit[t, u-1] and
a[u] = alpha[t-1, u] + blank[t-1, u]:

    alpha[t, u] = E[u] + logcumsumexp_k<=u (a[k] - E[k])

so the loop runs over T only, and autograd gives the gradients. The lattice works in float64: the cumulative
sums reach hundreds of nats, and float64 keeps the subtraction from losing precision (the lattice is only
B x T x U+1, so this costs little).

FastEmit and the gradient clamp are applied as NeMo's numba loss applies them, so a model trained with them keeps
them on CPU: with FastEmit weight lambda the gradients of label emissions are scaled by 1 + lambda (blank's are
not) and the reported loss is (1 + lambda) x the negative log-likelihood; ``clamp`` > 0 clamps the gradient of the
joint's output to [-clamp, clamp].
"""

from __future__ import annotations

import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss


class _ClampGradient(torch.autograd.Function):
    """Identity whose backward clamps the gradient to [-clamp, clamp] (NeMo's ``LogSoftmaxGradModification``)."""

    @staticmethod
    def forward(ctx, acts: torch.Tensor, clamp: float) -> torch.Tensor:
        ctx.clamp = clamp
        return acts.view_as(acts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.clamp(-ctx.clamp, ctx.clamp), None


class VectorizedRNNTLoss(torch.nn.Module):
    """Drop-in for NeMo's ``RNNTLossPytorch`` (same arguments, per-utterance negative log-likelihoods), with
    ``RNNTLossNumba``'s ``fastemit_lambda`` and ``clamp``."""

    def __init__(self, blank: int, fastemit_lambda: float = 0.0, clamp: float = -1.0):
        super().__init__()
        self.blank = blank
        self.fastemit_lambda = float(fastemit_lambda)
        self.clamp = float(clamp)
        self.reduction = None  # NeMo's RNNTLoss reduces, and sets this attribute around each call

    def forward(
        self, acts: torch.Tensor, labels: torch.Tensor, act_lens: torch.Tensor, label_lens: torch.Tensor
    ) -> torch.Tensor:
        """acts (B, T, U+1, V) joint logits; labels (B, U); lengths (B,). Returns (B,) negative log-likelihoods."""
        if self.clamp > 0 and acts.requires_grad:
            acts = _ClampGradient.apply(acts, self.clamp)
        log_probs = torch.log_softmax(acts.float(), dim=-1)
        batch, frames, label_axis, _ = log_probs.shape
        blank = log_probs[..., self.blank].double()  # (B, T, U+1)
        # emit[b, t, u]: the log-probability of emitting labels[b, u] from lattice cell (t, u)
        index = labels[:, None, : label_axis - 1, None].long().expand(batch, frames, label_axis - 1, 1)
        emit = log_probs[:, :, :-1].gather(-1, index).squeeze(-1).double()  # (B, T, U)
        fastemit = self.fastemit_lambda
        if fastemit:  # same values, label-emission gradients x (1 + lambda)
            emit = (1 + fastemit) * emit - fastemit * emit.detach()
        cumulative = torch.nn.functional.pad(emit.cumsum(-1), (1, 0))  # E: (B, T, U+1)

        alphas = [cumulative[:, 0]]
        for t in range(1, frames):
            reach = alphas[-1] + blank[:, t - 1]
            alphas.append(cumulative[:, t] + torch.logcumsumexp(reach - cumulative[:, t], dim=-1))
        alpha = torch.stack(alphas, dim=1)  # (B, T, U+1)

        rows = torch.arange(batch, device=acts.device)
        last_t, last_u = act_lens.long() - 1, label_lens.long()
        nll = -(alpha[rows, last_t, last_u] + blank[rows, last_t, last_u])
        if fastemit:  # the value NeMo reports; the gradient stays the one above
            nll = nll + fastemit * nll.detach()
        return nll.float()


def use_vectorized_loss(loss: RNNTLoss, fastemit_lambda: float = 0.0, clamp: float = -1.0) -> None:
    """Make a NeMo ``RNNTLoss`` (the model's ``loss``, shared with its joint) compute with ``VectorizedRNNTLoss``."""
    loss._loss = VectorizedRNNTLoss(blank=loss._blank, fastemit_lambda=fastemit_lambda, clamp=clamp)
