"""Audio checks and cut building: from a :class:`Candidate` to a 16 kHz mono Lhotse cut.

The checks read audio headers only; the samples are decoded by the Shar writer (and, for a down-mix, once
before it to measure the channels' levels). Resampling, down-mixing and the telephone channel are Lhotse
transforms recorded on the cut, so ``cuts.jsonl.gz`` still points at the original files (or tar members) and
loads them exactly as the Shar shards store them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lhotse import AudioSource, MonoCut, MultiCut, Recording, SupervisionSegment, fastcopy
from lhotse.cut import Cut, MixedCut, MixTrack

from data_prep.errors import Rejected, one_line
from data_prep.rows import Candidate, recording_id
from data_prep.tarred import TarArchives
from recipes.transcribe.channels import mix_gain

# The phone channel of augment.telephone: Lhotse's GSM 06.10 codec, which runs at 8 kHz (resampled down and back).
TELEPHONE_CODEC = "gsm"


class HeaderCache:
    """Reads each audio file's (or tar member's) header once per worker (a long recording serves many rows)."""

    def __init__(self) -> None:
        self._cache: dict[tuple, Recording | Rejected] = {}
        self.archives = TarArchives()

    def recording(self, path: str, archive: str | None = None) -> Recording:
        """The recording at ``path``, or of member ``path`` of the tar file ``archive``."""
        key = (archive, path)
        if key not in self._cache:
            try:
                self._cache[key] = _probe(path) if archive is None else self._member(archive, path)
            except Rejected as r:
                self._cache[key] = r
        found = self._cache[key]
        if isinstance(found, Rejected):
            raise found
        return found

    def _member(self, archive: str, name: str) -> Recording:
        member = self.archives.member(archive, name)
        rec = self.archives.recording(archive, member, recording_id(f"{archive}/{member}"))
        if rec.num_samples == 0 or rec.duration <= 0:
            raise Rejected("audio_empty", f"{member} in {archive}")
        return rec

    def in_memory(self, rec: Recording, cand: Candidate) -> Recording:
        """A tar member's recording reading the member's bytes in this process (no ``tar`` command per cut)."""
        member = self.archives.member(cand.archive, cand.audio_path)
        return fastcopy(rec, sources=[self.archives.memory_source(cand.archive, member, rec.sources[0].channels)])


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


def _channel(wanted: int | None, rec: Recording) -> int | list[int]:
    """The channel a NeMo/TSV row's cut is made of: ``wanted``, or every channel when None."""
    if wanted is None:
        return rec.channel_ids if len(rec.channel_ids) > 1 else rec.channel_ids[0]
    if wanted not in rec.channel_ids:
        raise Rejected("channel_out_of_range", f"channel {wanted}, the audio has {len(rec.channel_ids)} channel(s)")
    return wanted


def build_cut(cand: Candidate, headers: HeaderCache, tolerance: float) -> Cut:
    """The cut a candidate describes, at the source's own rate and channels (raises :class:`Rejected`). A tar
    member's cut reads the member's bytes from memory (:func:`for_manifest` gives the cut that reads the tar)."""
    if cand.recording is not None:
        rec = _manifest_recording(cand, headers, tolerance)
        channel = cand.channel
    else:
        rec = headers.recording(cand.audio_path, cand.archive)
        channel = _channel(cand.channel, rec)
        if cand.archive is not None:
            rec = headers.in_memory(rec, cand)
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


def to_target_format(cut: Cut, sample_rate: int, telephone: float = 0.0) -> Cut:
    """Resample to ``sample_rate``, down-mix several channels (:func:`down_mix`), and pass a ``telephone`` share
    of the cuts (the same ones on every run) through a phone channel: all lazily, as Lhotse transforms."""
    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    if isinstance(cut, MultiCut):
        cut = down_mix(cut)
    if on_telephone(cut.id, telephone):
        cut = cut.compress(TELEPHONE_CODEC)
    return cut


def on_telephone(cut_id: str, share: float) -> bool:
    """Whether the cut is one of the ``share`` that augment.telephone passes through a phone channel (chosen by
    its id, so that a re-run picks the same cuts)."""
    return share > 0 and int(hashlib.sha1(cut_id.encode("utf-8")).hexdigest()[:8], 16) < share * 2**32


def audio_facts(source: Cut, telephone: float) -> list[str]:
    """What becoming 16 kHz mono did to one kept cut (``source``: as built from its file), as the keys its
    seconds count under in summary.json's ``audio``."""
    facts = [f"from_{source.sampling_rate}_hz"]
    if isinstance(source, MultiCut):
        facts.append("down_mixed")
    elif len(source.recording.channel_ids) > 1:
        facts.append("channel_selected")
    if on_telephone(source.id, telephone):
        facts.append("telephone")
    return facts


def down_mix(cut: MultiCut) -> MixedCut:
    """The mean of the channels at the loudest channel's level (``recipes.transcribe.channels``: speech on one
    channel of a call keeps its level). Decodes the cut once to measure the channels."""
    tracks = cut.to_mono(mono_downmix=False)
    scale = mix_gain(cut.load_audio()) / len(tracks)  # Lhotse mixes by summing; so each track is scaled first
    tracks = [
        fastcopy(t.perturb_volume(scale, affix_id=False), supervisions=t.supervisions if i == 0 else [])
        for i, t in enumerate(tracks)
    ]
    return MixedCut(id=cut.id, tracks=[MixTrack(cut=t) for t in tracks])


def for_shar(cut: Cut) -> Cut:
    """Shar stores one recording per cut: a down-mix is rendered in memory (WAV, cheap) before writing."""
    return cut.to_mono(encoding="wav") if isinstance(cut, MixedCut) else cut


def with_source(cut: Cut, source: AudioSource) -> Cut:
    """``cut`` with its recording (every track's, for a down-mix) read from ``source``; transforms kept."""
    if isinstance(cut, MixedCut):
        return fastcopy(cut, tracks=[fastcopy(t, cut=with_source(t.cut, source)) for t in cut.tracks])
    return fastcopy(cut, recording=fastcopy(cut.recording, sources=[source]))


def for_manifest(cut: Cut, headers: HeaderCache, cand: Candidate) -> Cut:
    """The cut as ``cuts.jsonl.gz`` keeps it: a tar member read with ``tar`` rather than its bytes inline."""
    if cand.archive is None:
        return cut
    return with_source(cut, headers.recording(cand.audio_path, cand.archive).sources[0])
