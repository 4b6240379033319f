"""ONNX export of the cache-aware transducer, laid out for sherpa-onnx's NeMo streaming loader.

One encoder per lookahead (the chunk sizes, attention masks and caches are fixed at trace time), and one prediction
network and one joint shared by all of them::

    <dir>/tokens.txt                       pieces in id order, then <blk> (sherpa-onnx checks it is last)
    <dir>/decoder.onnx, <dir>/joiner.onnx  NeMo's own export of the prediction network and the joint
    <dir>/<ms>ms/encoder.onnx              the encoder at lookahead <ms>, with the metadata sherpa-onnx reads
    <dir>/*.int8.onnx                      the same with int8 weights (dynamic quantisation), when asked
    <dir>/export.json                      what was exported: lookaheads, files, metadata

The encoder's inputs and outputs are NeMo's cache-aware export (``set_export_config({"cache_support": True})``):
``audio_signal`` (B, F, T), ``length``, ``cache_last_channel`` (B, layers, left, d), ``cache_last_time``
(B, layers, d, conv), ``cache_last_channel_len``. One change: the subsampled frames of the pre-encode cache that are
dropped after the subsampling are ``min(drop_extra_pre_encoded, frames emitted so far)``, read from
``cache_last_channel_len``, where NeMo's graph always drops ``drop_extra_pre_encoded``. So a stream's first chunk
(nothing emitted, no pre-encode cache) runs through the same graph as the rest, and the graph steps exactly the chunks
``recipes.streaming.ChunkPlan`` plans; sherpa-onnx, whose chunks always carry the cache, is unaffected after its
first chunk.

Exporter: TorchScript-based ``torch.onnx.export(..., dynamo=False)``, as NeMo's own ``Exportable.export`` does
(it says "for LSTM compatibility"). torch 2.13's default dynamo exporter goes through ``torch.export``, which has to
capture NeMo's streaming code as one graph (Python branches on cache sizes, in-place cache updates, the LSTM's
``flatten_parameters``); the tracer records exactly the ops one chunk step runs, which is what is exported here.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Sequence

import onnx
import torch

from recipes.streaming import _no_typechecks, evaluation_mode, lookahead_ms

log = logging.getLogger(__name__)

ENCODER_INPUTS = ["audio_signal", "length", "cache_last_channel", "cache_last_time", "cache_last_channel_len"]
ENCODER_OUTPUTS = ["outputs", "encoded_lengths", "cache_last_channel_next", "cache_last_time_next",
                   "cache_last_channel_next_len"]
OPSET = 17  # NeMo's default for its own exports
MANIFEST = "export.json"


def _first_and_later(value) -> int:
    """The size of every chunk after the first (what sherpa-onnx steps by)."""
    return int(value[1]) if isinstance(value, (list, tuple)) else int(value)


class _KeepOneChunk(torch.nn.Module):
    """The encoder's subsampling, keeping only its newest ``valid_out_len`` frames (one chunk): the older ones are the
    pre-encode cache's, emitted by the previous chunk. NeMo drops a fixed ``drop_extra_pre_encoded`` instead, which
    is the same for a full window and wrong for a stream's first chunk (no cache: nothing to drop)."""

    def __init__(self, pre_encode: torch.nn.Module, chunk_frames: int):
        super().__init__()
        self.inner, self.chunk_frames = pre_encode, chunk_frames

    def forward(self, x, lengths):
        out, lengths = self.inner(x=x, lengths=lengths)
        drop = torch.clamp(torch._shape_as_tensor(out)[1] - self.chunk_frames, min=0)  # traced: follows T
        return out[:, drop:], (lengths - drop).clamp(min=0)


class _StreamingEncoder(torch.nn.Module):
    """One chunk step of the encoder with batch-first caches, as sherpa-onnx runs it."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.streaming_cfg
        encoder.pre_encode = _KeepOneChunk(encoder.pre_encode, int(cfg.valid_out_len))
        cfg.drop_extra_pre_encoded = 0  # dropped by _KeepOneChunk instead

    def forward(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len):
        return self.encoder.forward_for_export(audio_signal, length, cache_last_channel, cache_last_time,
                                               cache_last_channel_len)


class _PredictionNetwork(torch.nn.Module):
    """One step of the LSTM prediction network with its state as two tensors (layers, B, hidden), batch dynamic
    everywhere (NeMo's own export fixes the batch of the second state to 1)."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, targets, target_length, state_h, state_c):
        out, (h, c) = self.decoder.predict(targets, state=[state_h, state_c], add_sos=False)
        return out.transpose(1, 2), target_length, h, c


def _export_decoder(model, path: Path) -> None:
    decoder = model.decoder
    layers, hidden, batch = decoder.pred_rnn_layers, decoder.pred_hidden, 2
    example = (torch.full((batch, 1), decoder.blank_idx, dtype=torch.int32), torch.ones(batch, dtype=torch.int32),
               torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden))
    names = ["targets", "target_length", "states", "cells"], ["outputs", "prednet_lengths", "states_next", "cells_next"]
    dynamic = {"targets": {0: "batch"}, "target_length": {0: "batch"}, "states": {1: "batch"}, "cells": {1: "batch"},
               "outputs": {0: "batch"}, "prednet_lengths": {0: "batch"}, "states_next": {1: "batch"},
               "cells_next": {1: "batch"}}
    with _no_typechecks(), torch.no_grad():
        torch.onnx.export(_PredictionNetwork(decoder).eval(), example, str(path), input_names=names[0],
                          output_names=names[1], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def encoder_metadata(model, encoder) -> dict[str, str]:
    """What sherpa-onnx's ``OnlineTransducerNeMoModel`` reads from the encoder, for ``encoder`` (the model's, at the
    lookahead being exported): a window is one later chunk plus its pre-encode cache, and it moves by one chunk."""
    cfg = encoder.streaming_cfg
    chunk = _first_and_later(cfg.chunk_size)
    normalize = model.cfg.preprocessor.get("normalize", "NA")
    return {key: str(value) for key, value in {
        "model_type": "EncDecRNNTBPEModel",
        "comment": f"cache-aware streaming, RNNT branch of {type(model).__name__}",
        "version": "1",
        "att_context_size": json.dumps(list(encoder.att_context_size)),
        "chunk_size_ms": lookahead_ms(encoder.att_context_size),
        "window_size": chunk + _first_and_later(cfg.pre_encode_cache_size),
        "chunk_shift": chunk,
        "vocab_size": model.decoder.vocab_size,  # without the blank: sherpa-onnx adds it
        "subsampling_factor": encoder.subsampling_factor,
        "feat_dim": encoder._feat_in,
        "normalize_type": "" if normalize in (None, "NA") else normalize,
        "pred_rnn_layers": model.decoder.pred_rnn_layers,
        "pred_hidden": model.decoder.pred_hidden,
        "cache_last_channel_dim1": len(encoder.layers),
        "cache_last_channel_dim2": cfg.last_channel_cache_size,
        "cache_last_channel_dim3": encoder.d_model,
        "cache_last_time_dim1": len(encoder.layers),
        "cache_last_time_dim2": encoder.d_model,
        "cache_last_time_dim3": encoder.conv_context_size[0],
    }.items()}


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _export_encoder(model, att_context_size: Sequence[int], path: Path) -> dict[str, str]:
    encoder = copy.deepcopy(model.encoder)  # the wrapper swaps the subsampling and edits the streaming config
    encoder.set_default_att_context_size(list(att_context_size))
    encoder.export_cache_support = True
    metadata = encoder_metadata(model, encoder)
    wrapper = _StreamingEncoder(encoder).eval()
    batch, window = 2, int(metadata["window_size"])
    channel, time_cache, channel_len = encoder.get_initial_cache_state(batch_size=batch)
    example = (torch.randn(batch, encoder._feat_in, window), torch.full((batch,), window, dtype=torch.int64),
               channel.transpose(0, 1).contiguous(), time_cache.transpose(0, 1).contiguous(),
               torch.full((batch,), 3, dtype=torch.int64))
    dynamic = {"audio_signal": {0: "batch", 2: "frames"}, "length": {0: "batch"}, "cache_last_channel": {0: "batch"},
               "cache_last_time": {0: "batch"}, "cache_last_channel_len": {0: "batch"},
               "outputs": {0: "batch", 2: "encoded_frames"}, "encoded_lengths": {0: "batch"},
               "cache_last_channel_next": {0: "batch"}, "cache_last_time_next": {0: "batch"},
               "cache_last_channel_next_len": {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _no_typechecks(), torch.no_grad():
        torch.onnx.export(wrapper, example, str(path), input_names=ENCODER_INPUTS, output_names=ENCODER_OUTPUTS,
                          dynamic_axes=dynamic, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    _set_metadata(path, metadata)
    return metadata


def write_tokens(model, path: Path) -> Path:
    """``piece id`` per line in id order, then ``<blk>`` with the last id, as sherpa-onnx's symbol table reads it."""
    vocabulary = list(model.joint.vocabulary)
    lines = [f"{piece} {i}" for i, piece in enumerate(vocabulary)] + [f"<blk> {len(vocabulary)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def quantize_int8(path: Path) -> Path:
    """Dynamic quantisation of the weights to int8 (activations stay float): ``<name>.int8.onnx``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_suffix(".int8.onnx")
    quantize_dynamic(model_input=str(path), model_output=str(out), weight_type=QuantType.QUInt8)
    return out


def export_onnx(model, output_dir: str | Path, lookaheads: Sequence[Sequence[int]] | None = None,
                int8: bool = False) -> dict:
    """Export ``model`` (a cache-aware RNNT or hybrid RNNT+CTC model) into ``output_dir``; returns the manifest
    (also written as ``export.json``). ``lookaheads``: default every lookahead the model was trained with."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lookaheads = [list(la) for la in (lookaheads or model.encoder.att_context_size_all)]
    manifest = {"tokens": "tokens.txt", "decoder": "decoder.onnx", "joiner": "joiner.onnx", "encoders": {}}
    write_tokens(model, out / "tokens.txt")
    with evaluation_mode(model, lookaheads[0]):
        _export_decoder(model, out / "decoder.onnx")
        copy.deepcopy(model.joint).export(str(out / "joiner.onnx"), onnx_opset_version=OPSET)  # NeMo's own export
        for la in lookaheads:
            key = f"{lookahead_ms(la)}ms"
            metadata = _export_encoder(model, la, out / key / "encoder.onnx")
            manifest["encoders"][key] = {"att_context_size": la, "encoder": f"{key}/encoder.onnx",
                                         "metadata": metadata}
    if int8:
        for rel in ["decoder.onnx", "joiner.onnx"] + [e["encoder"] for e in manifest["encoders"].values()]:
            quantize_int8(out / rel)
        manifest["int8"] = True
    manifest["decoding"] = {"max_symbols": _max_symbols(model)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("ONNX export: %s (%s)", out, ", ".join(manifest["encoders"]))
    return manifest


def _max_symbols(model) -> int:
    """Tokens greedy RNNT decoding may emit per encoder frame, as the model's decoding config says."""
    greedy = model.cfg.decoding.get("greedy") or {}
    return int(greedy.get("max_symbols") or greedy.get("max_symbols_per_step") or 10)


def load_manifest(onnx_dir: str | Path) -> dict:
    return json.loads((Path(onnx_dir) / MANIFEST).read_text())
