"""The concurrency benchmark runs end to end on the demo model and reports what it claims (no timing asserted)."""

import json
import math

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording

from recipes.streaming.geometry import ChunkPlan
from recipes.streaming.modes import evaluation_mode
from scripts.bench_concurrency import main, replay
from tests.support.models import BASE_MODEL


def test_replay_queues_a_step_behind_a_slow_one():
    # chunk 1 arrives at 2 s but step 0 ends at 2.5 s; chunk 2 then waits for step 1 (ends 4 s)
    assert np.allclose(replay([1.0, 2.0, 3.0], [1.5, 1.5, 0.2]), [1.5, 2.0, 1.2])


def test_concurrency_report_is_well_formed(tmp_path):
    t = np.arange(6 * 16000) / 16000
    sf.write(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t), 16000)
    cuts = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([Recording.from_file(tmp_path / "a.wav").to_cut()]).to_file(cuts)
    out = tmp_path / "report.json"

    main(
        [
            "--model",
            str(BASE_MODEL),
            "--lookaheads",
            "70,13",
            "68,3",
            "--seconds",
            "2",
            "--max-streams",
            "2",
            "--long-seconds",
            "3",
            "--cuts",
            str(cuts),
            "--out",
            str(out),
        ]
    )

    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["dtype"] == "fp32" and report["allocator"] == "kept"
    assert [r["chunk_ms"] for r in report["results"]] == [1120, 320]
    from recipes.model_files import load_model

    model = load_model(str(BASE_MODEL))
    for result in report["results"]:
        with evaluation_mode(model, result["lookahead"]):
            plan = ChunkPlan.of(model.encoder)
        trials = result["trials"]
        sizes = [t["streams"] for t in trials]
        assert sizes[0] == 1 and sizes == sorted(sizes) and max(sizes) <= 2
        for trial in trials:
            assert trial["steps"] == plan.steps(201)  # 2 s: 200 mel frames of 10 ms and NeMo's one more
            assert 0 < trial["step_ms_p50"] <= trial["step_ms_p99"] <= trial["latency_ms_max"]
            assert trial["latency_ms_p50"] <= trial["latency_ms_p99"] <= trial["latency_ms_max"]
            assert trial["keeps_up"] == (trial["latency_ms_p99"] <= result["chunk_ms"])
            assert math.isfinite(trial["rtf"]) and trial["rtf"] > 0
        # the largest N reported is the largest trial that kept up, with every smaller trial keeping up too
        passed = [t["streams"] for t in trials if t["keeps_up"]]
        assert result["max_streams"] == max(passed, default=0)
        assert all(t["keeps_up"] for t in trials if t["streams"] < result["max_streams"])
        assert result["long"]["streams"] == max(result["max_streams"], 1) and result["long"]["seconds"] == 3
        assert sum(w["steps"] for w in result["long_windows"]) == result["long"]["steps"] == plan.steps(301)


def test_320ms_lookahead_streams_exactly_like_offline():
    """[68, 3], how the benchmarks run 320 ms, is a lookahead the engine streams exactly (it was not trained)."""
    from recipes.model_files import load_model
    from recipes.streaming.engine import StreamingRecognizer, count_token_differences
    from scripts.bench_models import LOOKAHEAD_320MS

    rng = np.random.default_rng(0)
    audios = [(0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in (7.5, 3.0, 1.2)]
    recognizer = StreamingRecognizer(load_model(str(BASE_MODEL)), batch_size=2)
    streamed, offline = recognizer.stream(audios, LOOKAHEAD_320MS), recognizer.offline(audios, LOOKAHEAD_320MS)
    assert sum(map(len, offline.tokens)) > 0
    assert count_token_differences(streamed.tokens, offline.tokens) == 0


def test_blank_calibration_brings_random_weights_to_the_reference_token_rate(random_model):
    """Random weights emit a token at most frames; with the blank logit calibrated, the offline pass (and so the
    streams) emit about the reference texts' tokens, and calibrating again starts from the untrained bias."""
    from recipes.streaming.engine import StreamingRecognizer
    from scripts.token_rate import TOLERANCE, BlankCalibration
    from tests.support.streaming import random_audios

    audios = random_audios([3.0, 4.5, 2.2], seed=7)
    texts = ["alpha bravo charlie", "delta echo foxtrot golf hotel", "india juliett"]
    reference = sum(len(random_model.tokenizer.text_to_ids(t)) for t in texts)
    calibration = BlankCalibration(random_model)
    untrained = calibration.untrained
    try:
        before = sum(map(len, StreamingRecognizer(random_model).offline(audios, [70, 1]).tokens))
        result = calibration.calibrate(audios, texts, [70, 1])
        assert before > 3 * reference and result.bias > 0 and result.reference == reference
        assert abs(result.tokens - reference) <= max(TOLERANCE * reference, 2)
        assert sum(map(len, StreamingRecognizer(random_model).stream(audios, [70, 1]).tokens)) == result.tokens
        assert calibration.calibrate(audios, texts, [70, 13]).tokens > 0
    finally:
        calibration.bias.fill_(untrained)
