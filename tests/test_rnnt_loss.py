"""The vectorised RNNT loss gives NeMo's pure-PyTorch loss values and gradients, and the recipe uses it on CPU."""

import pytest
import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss

from recipes.finetune.loss import VectorizedRNNTLoss, use_vectorized_loss
from recipes.finetune.model import VECTORIZED, resolve_rnnt_loss


@pytest.mark.parametrize("batch,frames,labels,vocab", [(1, 1, 1, 3), (3, 7, 4, 6), (5, 19, 9, 33)])
def test_matches_nemo_pytorch_loss_values_and_gradients(batch, frames, labels, vocab):
    generator = torch.Generator().manual_seed(batch * 1000 + frames)
    acts = torch.randn(batch, frames, labels + 1, vocab, generator=generator, requires_grad=True)
    targets = torch.randint(0, vocab - 1, (batch, labels), generator=generator)
    # Padded batches: every utterance but the first is shorter in time and in labels.
    act_lens = torch.randint(max(1, frames // 2), frames + 1, (batch,), generator=generator)
    label_lens = torch.randint(0, labels + 1, (batch,), generator=generator)
    act_lens[0], label_lens[0] = frames, labels

    losses = {}
    for name in ("reference", VECTORIZED):
        loss = RNNTLoss(num_classes=vocab - 1, reduction="mean_batch", loss_name="pytorch")
        if name == VECTORIZED:
            use_vectorized_loss(loss)
            assert isinstance(loss._loss, VectorizedRNNTLoss)
        value = loss(log_probs=acts, targets=targets, input_lengths=act_lens, target_lengths=label_lens)
        losses[name] = (value.detach(), torch.autograd.grad(value, acts)[0])

    (ref_value, ref_grad), (value, grad) = losses["reference"], losses[VECTORIZED]
    assert torch.isfinite(value) and value > 0
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    # Padding carries no gradient.
    short = int(act_lens.argmin())
    assert grad[short, act_lens[short] :].abs().sum() == 0


def test_auto_picks_the_vectorised_loss_off_gpu():
    assert resolve_rnnt_loss("auto", trainer=None) == VECTORIZED
    assert resolve_rnnt_loss("warprnnt_numba", trainer=None) == "warprnnt_numba"
