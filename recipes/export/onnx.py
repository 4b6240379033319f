"""ONNX export of the cache-aware transducer, laid out for sherpa-onnx's NeMo streaming loader.

One encoder per lookahead (the chunk sizes, attention masks and caches are fixed at trace time), and one prediction
network and one joint shared by all of them::

    <dir>/tokens.txt                       pieces in id order, then <blk> (sherpa-onnx checks it is last)
    <dir>/decoder.onnx, <dir>/joiner.onnx  NeMo's own export of the prediction network and the joint
    <dir>/<ms>ms/encoder.onnx              the encoder at lookahead <ms>, with the metadata sherpa-onnx reads
    <dir>/<ms>ms/encoder.onnx.data         its weights, when the graph is over protobuf's 2 GiB (the 0.6B model)
    <dir>/*.int8.onnx                      the same with int8 weights (dynamic quantisation), when asked
    <dir>/export.json                      what was exported: lookaheads, files, metadata

The encoder's inputs and outputs are NeMo's cache-aware export (``set_export_config({"cache_support": True})``):
``audio_signal`` (B, F, T), ``length``, ``cache_last_channel`` (B, layers + carry, left, d), ``cache_last_time``
(B, layers, d, conv), ``cache_last_channel_len``. Every call takes one *window* of ``window_size`` mel frames, and
window k starts ``chunk_shift * k`` frames into the stream, as sherpa-onnx steps it. NeMo's own export assumes that
the model's chunks fall there, but they fall ``lead_frames`` (16) frames earlier: a stream's first chunk is
``chunk[0]`` frames with no pre-encode cache, 16 frames fewer than a window. The graph here keeps the last 16
frames before each window in ``carry_layers`` more layers of ``cache_last_channel`` (zeros for a new stream) and
runs the model's window: those frames, then the start of the window given. In the first window (and the second at
80 ms) the zeros are cut off before the subsampling, which then runs on the stream from its start as NeMo's first
steps do; the window's step is read from ``cache_last_channel_len``. Windows then fall exactly on
``recipes.streaming.geometry.ChunkPlan``'s chunks with no lead-in, and every window runs through one graph.

``lead_in_samples`` (metadata, 80) is half a hop: kaldi-native-fbank's frames (``snip_edges=false``) are centred 80
samples later than NeMo's, so that much silence before a stream gives sherpa-onnx NeMo's frame grid. Features are
computed before the graph, so no graph can move them; a stream fed without it is decoded from its first frame, on
features half a hop off (the measured cost is in docs/export.md).

A graph over protobuf's 2 GiB limit (the 0.6B encoder, 2.3 GiB of fp32 weights) keeps its weights outside it, as
ONNX's external data: torch's exporter writes one file per tensor (hundreds), which are gathered here, one tensor at a
time, into one ``encoder.onnx.data`` beside the encoder (onnxruntime and sherpa-onnx read it from there), and the
metadata goes into the graph file without loading the weights. The int8 files are small enough to be whole.

Exporter: TorchScript-based ``torch.onnx.export(..., dynamo=False)``, as NeMo's own ``Exportable.export`` does
(it says "for LSTM compatibility"). torch 2.13's default dynamo exporter goes through ``torch.export``, which has to
capture NeMo's streaming code as one graph (Python branches on cache sizes, in-place cache updates, the LSTM's
``flatten_parameters``); the tracer records exactly the ops one chunk step runs, which is what is exported here.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import onnx
import torch
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from recipes.finetune.model import release_freed_memory
from recipes.streaming.geometry import lookahead_ms
from recipes.streaming.modes import evaluation_mode, no_typechecks

log = logging.getLogger(__name__)

ENCODER_INPUTS = ["audio_signal", "length", "cache_last_channel", "cache_last_time", "cache_last_channel_len"]
ENCODER_OUTPUTS = [
    "outputs",
    "encoded_lengths",
    "cache_last_channel_next",
    "cache_last_time_next",
    "cache_last_channel_next_len",
]
ENCODER_DYNAMIC_AXES = {
    "audio_signal": {0: "batch", 2: "frames"},
    "length": {0: "batch"},
    "cache_last_channel": {0: "batch"},
    "cache_last_time": {0: "batch"},
    "cache_last_channel_len": {0: "batch"},
    "outputs": {0: "batch", 2: "encoded_frames"},
    "encoded_lengths": {0: "batch"},
    "cache_last_channel_next": {0: "batch"},
    "cache_last_time_next": {0: "batch"},
    "cache_last_channel_next_len": {0: "batch"},
}
OPSET = 17  # NeMo's default for its own exports
MANIFEST = "export.json"


def _first_and_later(value) -> int:
    """The size of every chunk after the first (what sherpa-onnx steps by)."""
    return int(value[1]) if isinstance(value, (list, tuple)) else int(value)


def window_geometry(encoder) -> dict[str, int]:
    """Frames of one window, its shift, the lead frames the graph carries, and the cache layers that carry them,
    for the encoder at its current lookahead: the model's window k is chunk k and, for k > 0, the
    ``pre_encode_cache`` frames before it, which starts ``lead_frames`` before sherpa-onnx's window k."""
    cfg = encoder.streaming_cfg
    chunk, first = _first_and_later(cfg.chunk_size), int(cfg.chunk_size[0])
    window = chunk + _first_and_later(cfg.pre_encode_cache_size)
    lead = window - first
    layer = int(cfg.last_channel_cache_size) * encoder.d_model  # values in one layer of cache_last_channel
    carried = lead * encoder._feat_in + 1  # the frames, and how many of them lie past the stream's end
    return {"window_size": window, "chunk_shift": chunk, "lead_frames": lead, "carry_layers": -(-carried // layer)}


class _SkipLeadIn(torch.nn.Module):
    """The encoder's subsampling on one window, keeping the encoder frames of its new chunk.

    A window at step k still holds ``skip = max(0, lead - shift * k)`` lead-in frames; they are cut off before the
    subsampling, which then sees the stream from its start like NeMo's first steps, and the frames it emits for the
    pre-encode cache part of the window are dropped. Traced graphs cannot branch per row, so every skip that
    occurs (2 or 3 of them) is computed and each row takes its own: the subsampling is a small part of a step."""

    def __init__(self, pre_encode: torch.nn.Module, geometry: dict[str, int], pre_cache: int, chunk_frames: int):
        super().__init__()
        self.inner, self.chunk_frames = pre_encode, chunk_frames
        lead, shift = geometry["lead_frames"], geometry["chunk_shift"]
        self.lead, self.shift = lead, shift
        self.variants: list[tuple[int, int]] = []  # (skip, encoder frames to drop)
        for step in range(lead // shift + 2):
            skip = max(0, lead - shift * step)
            new_chunk_starts = lead if step == 0 else pre_cache
            self.variants.append((skip, self._emitted(max(0, new_chunk_starts - skip))))
            if skip == 0:
                break
        self.cache_len: torch.Tensor | None = None  # set by _StreamingEncoder before each call

    def _emitted(self, frames: int) -> int:
        """Encoder frames the subsampling emits for the first ``frames`` mel frames of what it is given."""
        if frames == 0:
            return 0
        with torch.no_grad():
            _, emitted = self.inner(x=torch.zeros(1, frames, self.inner._feat_in), lengths=torch.tensor([frames]))
        return int(emitted[0])

    def forward(self, x, lengths):
        step = torch.div(self.cache_len, self.chunk_frames, rounding_mode="floor")  # every window adds one chunk
        row_skip = torch.clamp(self.lead - self.shift * step, min=0)
        out = out_lengths = None
        for skip, drop in self.variants:
            frames, frame_lengths = self.inner(x=x[:, skip:], lengths=torch.clamp(lengths - skip, min=0))
            frames, frame_lengths = frames[:, drop:], torch.clamp(frame_lengths - drop, min=0)
            if out is None:
                out, out_lengths = frames, frame_lengths
            else:
                take = row_skip == skip
                out = torch.where(take[:, None, None], frames, out)
                out_lengths = torch.where(take, frame_lengths, out_lengths)
        return out, out_lengths


class _StreamingEncoder(torch.nn.Module):
    """One window step of the encoder with batch-first caches, as sherpa-onnx runs it.

    sherpa-onnx's window k starts ``chunk_shift * k`` frames into the stream; the model's window k starts
    ``lead_frames`` earlier. The last ``lead_frames`` frames before sherpa-onnx's window therefore travel from
    window to window in ``carry_layers`` extra layers of ``cache_last_channel`` (zeros at the start: the lead-in,
    which ``_SkipLeadIn`` cuts off), and the model's window is those frames followed by the start of sherpa-onnx's.
    Beside the frames travels how many of them lie past the stream's end, so that the model's window has the length
    NeMo's chunk would have when a stream ends inside the carried frames (its own window is then empty)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        cfg = encoder.streaming_cfg
        geometry = window_geometry(encoder)
        self.layers = len(encoder.layers)
        self.lead, self.shift, self.window = geometry["lead_frames"], geometry["chunk_shift"], geometry["window_size"]
        encoder.pre_encode = _SkipLeadIn(
            encoder.pre_encode, geometry, _first_and_later(cfg.pre_encode_cache_size), int(cfg.valid_out_len)
        )
        cfg.drop_extra_pre_encoded = 0  # dropped by _SkipLeadIn instead

    def forward(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len):
        batch, features = audio_signal.size(0), audio_signal.size(1)
        cache, carry = cache_last_channel[:, : self.layers], cache_last_channel[:, self.layers :]
        flat, size = carry.reshape(batch, -1), features * self.lead
        lead = flat[:, :size].reshape(batch, features, self.lead)
        valid = self.lead - flat[:, size].round().long() + length  # frames of the model's window before the end
        window = torch.cat([lead, audio_signal[:, :, : self.window - self.lead]], dim=2)
        self.encoder.pre_encode.cache_len = cache_last_channel_len
        encoded, lengths, cache, cache_time, cache_len = self.encoder.forward_for_export(
            window, torch.clamp(valid, max=self.window), cache, cache_last_time, cache_last_channel_len
        )
        lead = torch.cat([lead, audio_signal[:, :, : self.shift]], dim=2)[:, :, -self.lead :]
        past_end = self.lead - torch.clamp(valid - self.shift, min=0, max=self.lead)
        packed = torch.cat([lead.reshape(batch, -1), past_end[:, None].to(lead.dtype)], dim=1)
        packed = torch.nn.functional.pad(packed, (0, carry[0].numel() - size - 1))
        return encoded, lengths, torch.cat([cache, packed.reshape(carry.shape)], dim=1), cache_time, cache_len


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
    example = (
        torch.full((batch, 1), decoder.blank_idx, dtype=torch.int32),
        torch.ones(batch, dtype=torch.int32),
        torch.zeros(layers, batch, hidden),
        torch.zeros(layers, batch, hidden),
    )
    names = ["targets", "target_length", "states", "cells"], ["outputs", "prednet_lengths", "states_next", "cells_next"]
    dynamic = {
        "targets": {0: "batch"},
        "target_length": {0: "batch"},
        "states": {1: "batch"},
        "cells": {1: "batch"},
        "outputs": {0: "batch"},
        "prednet_lengths": {0: "batch"},
        "states_next": {1: "batch"},
        "cells_next": {1: "batch"},
    }
    with no_typechecks(), torch.no_grad():
        torch.onnx.export(
            _PredictionNetwork(decoder).eval(),
            example,
            str(path),
            input_names=names[0],
            output_names=names[1],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def encoder_metadata(model, encoder) -> dict[str, str]:
    """What sherpa-onnx's ``OnlineTransducerNeMoModel`` reads from the encoder, for ``encoder`` (the model's, at the
    lookahead being exported): a window is one later chunk plus its pre-encode cache, and it moves by one chunk;
    ``lead_frames`` and ``lead_in_samples`` are this export's own (see the module docstring)."""
    cfg = encoder.streaming_cfg
    geometry = window_geometry(encoder)
    hop = int(round(model.cfg.preprocessor.window_stride * model.cfg.preprocessor.sample_rate))
    normalize = model.cfg.preprocessor.get("normalize", "NA")
    return {
        key: str(value)
        for key, value in {
            "model_type": "EncDecRNNTBPEModel",
            "comment": f"cache-aware streaming, RNNT branch of {type(model).__name__}",
            "version": "1",
            "att_context_size": json.dumps(list(encoder.att_context_size)),
            "chunk_size_ms": lookahead_ms(encoder.att_context_size),
            **geometry,
            "lead_in_samples": hop // 2,
            "vocab_size": model.decoder.vocab_size,  # without the blank: sherpa-onnx adds it
            "subsampling_factor": encoder.subsampling_factor,
            "feat_dim": encoder._feat_in,
            "normalize_type": "" if normalize in (None, "NA") else normalize,
            "pred_rnn_layers": model.decoder.pred_rnn_layers,
            "pred_hidden": model.decoder.pred_hidden,
            "cache_last_channel_dim1": len(encoder.layers) + geometry["carry_layers"],
            "cache_last_channel_dim2": cfg.last_channel_cache_size,
            "cache_last_channel_dim3": encoder.d_model,
            "cache_last_time_dim1": len(encoder.layers),
            "cache_last_time_dim2": encoder.d_model,
            "cache_last_time_dim3": encoder.conv_context_size[0],
        }.items()
    }


def _tensors(graph: onnx.GraphProto):
    """Every tensor stored in ``graph``: initializers and constant attributes, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
                yield from _tensors(subgraph)


def _gather_external_data(proto: onnx.ModelProto, source_dir: Path, data_path: Path) -> int:
    """Copy the external data of ``proto``'s tensors (files in ``source_dir``) into the one file ``data_path``, one
    tensor at a time, and point the tensors at it; returns how many tensors moved."""
    moved = 0
    with open(data_path, "wb") as data:
        for tensor in _tensors(proto.graph):
            if not uses_external_data(tensor):
                continue
            info = ExternalDataInfo(tensor)
            with open(source_dir / info.location, "rb") as source:
                source.seek(info.offset or 0)
                payload = source.read(info.length) if info.length else source.read()
            offset = -(-data.tell() // 4096) * 4096  # page-aligned, so runtimes can map each tensor
            data.seek(offset)
            data.write(payload)
            del tensor.external_data[:]
            for key, value in (("location", data_path.name), ("offset", offset), ("length", len(payload))):
                tensor.external_data.add(key=key, value=str(value))
            moved += 1
    return moved


def _finish(exported: Path, path: Path, metadata: dict[str, str]) -> None:
    """``exported`` (torch's output, with any loose external data files beside it) as ``path`` with ``metadata``
    and, where it has external data, one ``<name>.data`` file beside it. The weights are never loaded whole."""
    proto = onnx.load(str(exported), load_external_data=False)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    data_path = path.with_name(path.name + ".data")
    if _gather_external_data(proto, exported.parent, data_path):
        log.info("%s: weights in %s (%.2f GiB)", path, data_path.name, data_path.stat().st_size / 2**30)
    else:
        data_path.unlink()
    onnx.save(proto, str(path))


@contextmanager
def _exportable(encoder, att_context_size: Sequence[int]):
    """The encoder set up for tracing at ``att_context_size`` (its subsampling wrapped, caches as inputs and outputs)
    and put back afterwards. No copy: the 0.6B encoder's weights are 2.3 GiB."""
    pre_encode, cache_support = encoder.pre_encode, getattr(encoder, "export_cache_support", False)
    previous = list(encoder.att_context_size)
    encoder.set_default_att_context_size(list(att_context_size))
    encoder.export_cache_support = True
    try:
        yield
    finally:
        encoder.pre_encode, encoder.export_cache_support = pre_encode, cache_support
        encoder.set_default_att_context_size(previous)  # a fresh streaming config: the wrapper edited this one


def _export_encoder(model, att_context_size: Sequence[int], path: Path) -> dict[str, str]:
    encoder = model.encoder
    with _exportable(encoder, att_context_size):
        metadata = encoder_metadata(model, encoder)
        wrapper = _StreamingEncoder(encoder).eval()
        batch, window = 2, int(metadata["window_size"])
        channel, time_cache, channel_len = encoder.get_initial_cache_state(batch_size=batch)
        example = (
            torch.randn(batch, encoder._feat_in, window),
            torch.full((batch,), window, dtype=torch.int64),
            torch.cat([channel, channel[: int(metadata["carry_layers"])]]).transpose(0, 1).contiguous(),
            time_cache.transpose(0, 1).contiguous(),
            torch.full((batch,), 3, dtype=torch.int64),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export.", dir=path.parent))  # torch's loose files land here
        try:
            with no_typechecks(), torch.no_grad():
                torch.onnx.export(
                    wrapper,
                    example,
                    str(staging / path.name),
                    input_names=ENCODER_INPUTS,
                    output_names=ENCODER_OUTPUTS,
                    dynamic_axes=ENCODER_DYNAMIC_AXES,
                    opset_version=OPSET,
                    do_constant_folding=True,
                    dynamo=False,
                )
            _finish(staging / path.name, path, metadata)
        finally:
            shutil.rmtree(staging)
    return metadata


def write_tokens(model, path: Path) -> Path:
    """``piece id`` per line in id order, then ``<blk>`` with the last id, as sherpa-onnx's symbol table reads it."""
    vocabulary = list(model.joint.vocabulary)
    lines = [f"{piece} {i}" for i, piece in enumerate(vocabulary)] + [f"<blk> {len(vocabulary)}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def _root_logging_quiet():
    """onnxruntime's quantiser logs through the root logger, per tensor: a note on each weight and a many-line warning
    on each tensor whose type it cannot infer (about a thousand lines for the 0.6B encoder); errors still show."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def onnx_bytes(path: Path) -> int:
    """Size of an ONNX file and of its external data file, if any."""
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def quantize_int8(path: Path) -> Path:
    """Dynamic quantisation of the weights to int8 (activations stay float): ``<name>.int8.onnx``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_suffix(".int8.onnx")
    with _root_logging_quiet():
        quantize_dynamic(model_input=str(path), model_output=str(out), weight_type=QuantType.QUInt8)
    return out


def export_onnx(
    model, output_dir: str | Path, lookaheads: Sequence[Sequence[int]] | None = None, int8: bool = False
) -> dict:
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
            manifest["encoders"][key] = {"att_context_size": la, "encoder": f"{key}/encoder.onnx", "metadata": metadata}
    release_freed_memory()  # what torch's exporter freed (its folded copies of the weights), before quantising
    if int8:
        files = [
            out / rel for rel in ["decoder.onnx", "joiner.onnx", *(e["encoder"] for e in manifest["encoders"].values())]
        ]
        quantized = [quantize_int8(path) for path in files]
        log.info(
            "int8 (dynamic quantisation of the weights): %d files, %.1f MB from %.1f MB",
            len(quantized),
            sum(map(onnx_bytes, quantized)) / 1e6,
            sum(map(onnx_bytes, files)) / 1e6,
        )
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
