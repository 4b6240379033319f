"""Audio checks and cut building: from a :class:`Candidate` to a 16 kHz mono Lhotse cut.

Everything here reads audio headers only; the samples are decoded once, by the Shar writer.
Resampling and down-mixing are Lhotse transforms recorded on the cut, so ``cuts.jsonl.gz`` still points at
the original files and loads them as 16 kHz mono.
"""

from __future__ import annotations

from pathlib import Path

from lhotse import MonoCut, MultiCut, Recording, SupervisionSegment, fastcopy
from lhotse.cut import Cut, MixedCut, MixTrack

from data_prep.errors import Rejected, one_line
from data_prep.rows import Candidate, recording_id


class HeaderCache:
    """Reads each audio file's header once per worker (a long recording serves many rows)."""

    def __init__(self) -> None:
        self._cache: dict[str, Recording | Rejected] = {}

    def recording(self, path: str) -> Recording:
        if path not in self._cache:
            try:
                self._cache[path] = _probe(path)
            except Rejected as r:
                self._cache[path] = r
        found = self._cache[path]
        if isinstance(found, Rejected):
            raise found
        return found


def _probe(path: str) -> Recording:
    if not Path(path).is_file():
        raise Rejected("audio_missing", path)
    try:
        rec = Recording.from_file(path, recording_id=recording_id(path))
    except Exception as e:  # lhotse wraps every backend's failure; any of them means "cannot read"
        raise Rejected("audio_unreadable", one_line(e)) from None
    if rec.num_samples == 0 or rec.duration <= 0:
        raise Rejected("audio_empty", path)
    return rec


def _manifest_recording(cand: Candidate, headers: HeaderCache, tolerance: float) -> Recording:
    """A Lhotse input's recording, after checking its files exist and agree with the manifest's length."""
    rec = Recording.from_dict(cand.recording)
    for source in rec.sources:
        if source.type == "file":
            header = headers.recording(source.source)
            if len(rec.sources) == 1 and not rec.transforms:
                if abs(header.duration - rec.duration) > tolerance:
                    raise Rejected(
                        "duration_mismatch",
                        f"manifest says {rec.duration:.2f}s, the file holds {header.duration:.2f}s",
                    )
    if rec.num_samples == 0:
        raise Rejected("audio_empty", rec.id)
    return rec


def locate(cand: Candidate, total: float, tolerance: float) -> tuple[float, float]:
    """Where the row's segment lies in audio of ``total`` seconds: (offset, duration), clipped to the end."""
    if cand.whole_file:
        if cand.duration is not None and abs(cand.duration - total) > tolerance:
            raise Rejected("duration_mismatch", f"declared {cand.duration:.2f}s, the audio holds {total:.2f}s")
        return 0.0, total
    offset = cand.offset
    if offset < 0 or offset >= total:
        raise Rejected("offset_out_of_range", f"offset {offset:.2f}s, the audio holds {total:.2f}s")
    duration = total - offset if cand.duration is None else cand.duration
    if offset + duration > total + tolerance:
        raise Rejected("segment_past_end", f"{offset:.2f}s + {duration:.2f}s > {total:.2f}s")
    return offset, min(duration, total - offset)


def build_cut(cand: Candidate, headers: HeaderCache, tolerance: float) -> Cut:
    """The cut a candidate describes, at the source's own rate and channels (raises :class:`Rejected`)."""
    if cand.recording is not None:
        rec = _manifest_recording(cand, headers, tolerance)
        channel = cand.channel
    else:
        rec = headers.recording(cand.audio_path)
        channel = rec.channel_ids if len(rec.channel_ids) > 1 else rec.channel_ids[0]
    offset, duration = locate(cand, rec.duration, tolerance)
    supervision = SupervisionSegment(
        id=cand.cut_id,
        recording_id=rec.id,
        start=0.0,
        duration=duration,
        channel=channel,
        text=cand.text,
        language=cand.language,
    )
    cut_type = MultiCut if isinstance(channel, list) else MonoCut
    return cut_type(
        id=cand.cut_id,
        start=offset,
        duration=duration,
        channel=channel,
        recording=rec,
        supervisions=[supervision],
        custom=cand.custom or None,
    )


def to_target_format(cut: Cut, sample_rate: int) -> Cut:
    """Resample to ``sample_rate`` and down-mix several channels to their mean, lazily (Lhotse transforms)."""
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    if isinstance(cut, MultiCut):
        tracks = cut.to_mono(mono_downmix=False)
        scale = 1.0 / len(tracks)  # Lhotse mixes by summing; scaling each track first makes it a mean
        tracks = [
            fastcopy(t.perturb_volume(scale, affix_id=False), supervisions=t.supervisions if i == 0 else [])
            for i, t in enumerate(tracks)
        ]
        cut = MixedCut(id=cut.id, tracks=[MixTrack(cut=t) for t in tracks])
    return cut


def for_shar(cut: Cut) -> Cut:
    """Shar stores one recording per cut: a down-mix is rendered in memory (WAV, cheap) before writing."""
    return cut.to_mono(encoding="wav") if isinstance(cut, MixedCut) else cut
