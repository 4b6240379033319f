"""Greedy RNNT decoding carried across chunks: NeMo's batched label-looping state, or per-utterance hypotheses."""

from __future__ import annotations

import dataclasses

import torch


class LabelLoopingDecoder:
    """Greedy batched RNNT decoding across chunks with NeMo's label-looping computer, its state kept batched."""

    def __init__(self, model):
        self.computer = model.decoding.decoding.decoding_computer
        self.decoder = model.decoder
        self.state = None
        self.token_frames: list[list[int]] = []  # per stream, the encoder frame of each token of the last chunk

    @staticmethod
    def supports(model) -> bool:
        greedy = getattr(model.decoding, "decoding", None)
        return getattr(greedy, "decoding_computer", None) is not None and getattr(
            greedy, "_greedy_decode", None
        ) == getattr(greedy, "_greedy_decode_blank_as_pad_loop_labels", 0)

    def __call__(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        hyps, self.state = self.computer(x=encoded.transpose(1, 2), out_len=lengths, prev_batched_state=self.state)
        # With CUDA graphs, NeMo returns hypotheses and state padded to the largest batch its graphs were built for
        # (rows past the live streams decode nothing): keep the live rows, so that the state shrinks and grows
        # with the streams as it does without graphs.
        live = encoded.size(0)
        self.keep(live)
        counts = hyps.current_lengths[:live].tolist()
        longest = max(counts, default=0)
        rows = hyps.transcript[:live, :longest].tolist()
        # The state counts the frames already decoded, so these are frames from the start of each stream.
        self.token_frames = [row[:count] for row, count in zip(hyps.timestamps[:live, :longest].tolist(), counts)]
        return [row[:count] for row, count in zip(rows, counts)]

    def keep(self, n: int) -> None:
        """Keep the state of the first ``n`` streams."""
        if self.state is not None and len(self.state.labels) > n:
            self.select(torch.arange(len(self.state.labels), device=self.state.labels.device) < n)

    def select(self, mask: torch.Tensor) -> None:
        """Keep the state of the streams where ``mask`` is true, in order."""
        s = self.state
        self.state = dataclasses.replace(
            s,
            predictor_states=self.decoder.mask_select_states(s.predictor_states, mask),
            predictor_outputs=s.predictor_outputs[mask],
            labels=s.labels[mask],
            decoded_lengths=s.decoded_lengths[mask],
            fusion_states_list=[f[mask] for f in s.fusion_states_list],
            time_jumps=None if s.time_jumps is None else s.time_jumps[mask],
        )

    def extend(self, other: "LabelLoopingDecoder") -> None:
        """Append the streams of ``other`` (whose state has been through at least one chunk)."""
        items = self.computer.split_batched_state(self.state) + self.computer.split_batched_state(other.state)
        self.state = self.computer.merge_to_batched_state(items)


class HypothesisDecoder:
    """Any other decoding strategy, through NeMo's partial hypotheses (what ``conformer_stream_step`` does)."""

    def __init__(self, model):
        self.decoding = model.decoding
        self.hyps = None
        self.token_frames: list[list[int]] = []

    def __call__(self, encoded: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
        before = [len(h.y_sequence) for h in self.hyps] if self.hyps else [0] * len(encoded)
        self.hyps = self.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=encoded, encoded_lengths=lengths, return_hypotheses=True, partial_hypotheses=self.hyps
        )
        self.token_frames = [[int(t) for t in h.timestamp[b:]] for h, b in zip(self.hyps, before)]
        return [[int(t) for t in h.y_sequence[b:]] for h, b in zip(self.hyps, before)]

    def select(self, mask: torch.Tensor) -> None:
        self.hyps = [h for h, keep in zip(self.hyps, mask.tolist()) if keep]

    def extend(self, other: "HypothesisDecoder") -> None:
        self.hyps = self.hyps + other.hyps
