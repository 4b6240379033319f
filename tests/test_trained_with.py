"""What a checkpoint was trained with survives fine-tuning: FastEmit, clamp and SpecAugment of a restored .nemo reach
the built model, an explicit override replaces only the key given, and the CPU loss applies FastEmit and clamp as
NeMo's numba loss does."""

import pytest
import torch
from nemo.collections.asr.losses.rnnt import RNNTLoss

from recipes.config import CONF, compose_config
from recipes.errors import UsageError
from recipes.finetune.loss import VectorizedRNNTLoss, use_vectorized_loss
from recipes.finetune.model import build_model, model_config
from tests.support.models import nemo_with

FASTEMIT, CLAMP = 7e-3, 2.0
SPEC_AUGMENT = {"freq_masks": 3, "time_masks": 4, "freq_width": 7, "time_width": 0.1}


@pytest.fixture(scope="module")
def trained_with_fastemit(tmp_path_factory):
    """The demo base model with the loss and SpecAugment of a streaming model trained with NeMo's numba loss."""

    def edit(config):
        config["loss"] = {
            "loss_name": "default",
            "warprnnt_numba_kwargs": {"fastemit_lambda": FASTEMIT, "clamp": CLAMP},
        }
        config["spec_augment"].update(SPEC_AUGMENT)

    return nemo_with(tmp_path_factory.mktemp("nemo") / "fastemit.nemo", edit)


def model_group(nemo, *overrides):
    return compose_config(CONF, "finetune", [f"model.init_from={nemo}", *overrides]).model


def spec_augment_of(model) -> dict:
    return {key: getattr(model.spec_augmentation.spec_augment, key) for key in SPEC_AUGMENT}


def test_fastemit_clamp_and_spec_augment_of_the_checkpoint_survive_build_model(trained_with_fastemit):
    model = build_model(model_group(trained_with_fastemit))
    assert model.cfg.loss.warprnnt_numba_kwargs == {"fastemit_lambda": FASTEMIT, "clamp": CLAMP}
    assert isinstance(model.loss._loss, VectorizedRNNTLoss)  # rnnt_loss=auto on CPU, applying them
    assert (model.loss._loss.fastemit_lambda, model.loss._loss.clamp) == (FASTEMIT, CLAMP)
    assert spec_augment_of(model) == SPEC_AUGMENT


def test_an_explicit_override_replaces_only_the_key_given(trained_with_fastemit):
    model = build_model(model_group(trained_with_fastemit, "model.spec_augment.time_masks=9", "model.loss.clamp=-1"))
    assert spec_augment_of(model) == {**SPEC_AUGMENT, "time_masks": 9}
    assert model.cfg.loss.warprnnt_numba_kwargs == {"fastemit_lambda": FASTEMIT, "clamp": -1.0}
    assert (model.loss._loss.fastemit_lambda, model.loss._loss.clamp) == (FASTEMIT, -1.0)


def test_each_kept_value_is_listed_with_its_source(trained_with_fastemit):
    _, _, settings = model_config(model_group(trained_with_fastemit, "model.spec_augment.time_masks=9"))
    by_key = {s.key: (s.value, s.source) for s in settings}
    assert by_key["loss.fastemit_lambda"] == (FASTEMIT, "checkpoint")
    assert by_key["spec_augment.time_masks"] == (9, "override")
    assert by_key["spec_augment.freq_masks"] == (3, "checkpoint")
    assert by_key["decoding.greedy.max_symbols"] == (10, "checkpoint")
    assert by_key["preprocessor.features"] == (80, "checkpoint")
    assert by_key["tokenizer.vocabulary_size"] == (128, "checkpoint")
    scratch = compose_config(CONF, "finetune", ["model.architecture.tokenizer.dir=unused"]).model
    assert {s.source for s in model_config(scratch)[2]} == {"architecture"}


def test_a_loss_without_fastemit_is_refused_for_a_model_trained_with_it(trained_with_fastemit):
    with pytest.raises(UsageError, match="model.rnnt_loss=pytorch: NeMo's pytorch RNNT loss has no FastEmit"):
        model_config(model_group(trained_with_fastemit, "model.rnnt_loss=pytorch"))
    nemo_cfg, _, _ = model_config(model_group(trained_with_fastemit, "model.rnnt_loss=warprnnt_numba"))
    assert nemo_cfg.loss == {
        "loss_name": "warprnnt_numba",
        "warprnnt_numba_kwargs": {"fastemit_lambda": FASTEMIT, "clamp": CLAMP},
    }


@pytest.mark.parametrize("fastemit_lambda,clamp", [(FASTEMIT, -1.0), (0.0, 0.05), (0.01, 0.05)])
def test_vectorised_loss_applies_fastemit_and_clamp_as_nemo_numba_loss(fastemit_lambda, clamp):
    generator = torch.Generator().manual_seed(3)
    batch, frames, labels, vocab = 3, 9, 5, 12
    acts = torch.randn(batch, frames, labels + 1, vocab, generator=generator, requires_grad=True)
    targets = torch.randint(0, vocab - 1, (batch, labels), generator=generator)
    act_lens, label_lens = torch.tensor([frames, 6, 4]), torch.tensor([labels, 3, 0])
    kwargs = {"fastemit_lambda": fastemit_lambda, "clamp": clamp}
    results = []
    for vectorized in (False, True):
        loss = RNNTLoss(vocab - 1, reduction="mean_batch", loss_name="warprnnt_numba", loss_kwargs=dict(kwargs))
        if vectorized:
            use_vectorized_loss(loss, **kwargs)
        value = loss(log_probs=acts, targets=targets, input_lengths=act_lens, target_lengths=label_lens)
        results.append((value.detach(), torch.autograd.grad(value, acts)[0]))
    (ref_value, ref_grad), (value, grad) = results
    torch.testing.assert_close(value, ref_value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5)
    if clamp > 0:
        assert grad.abs().max() <= clamp
