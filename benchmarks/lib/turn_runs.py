"""The turns of the latency benchmark: espeak-ng questions with their true speech end found
in the signal, one timed turn through ``Engine.talk`` with its critical-path breakdown, and
which turn phase each ping fell in."""
from __future__ import annotations

import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.lib.stats import r4
from pipeline.audio.endpointing import Endpointer

QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book for the weekend?",
    "What is the weather usually like in London in spring?",
    "Tell me a fun fact about octopuses.",
]

from pipeline.conversation.metrics import REPORTED_EVENTS as EVENT_ORDER  # noqa: E402  (the one list)


def speech_bounds(path: Path, threshold_db: float) -> tuple[float, float, float]:
    """(duration, first, last) speech time in seconds, from 10 ms frame RMS energy."""
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM")
    x = np.frombuffer(raw, np.int16).astype(np.float64)
    if ch > 1:
        x = x.reshape(-1, ch).mean(axis=1)
    hop = rate // 100
    n = len(x) // hop
    rms = np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1)) + 1e-9
    db = 20 * np.log10(rms / rms.max())
    loud = np.nonzero(db > threshold_db)[0]
    return len(x) / rate, loud[0] * hop / rate, (loud[-1] + 1) * hop / rate


def make_questions(tmp: Path, threshold_db: float) -> list[dict[str, Any]]:
    from tests.rigs.espeak import espeak_wav

    out = []
    for i, text in enumerate(QUESTIONS):
        p = tmp / f"q{i}.wav"
        try:
            espeak_wav(text, p, rate=None)
        except RuntimeError as e:
            raise SystemExit(str(e)) from None
        dur, first, last = speech_bounds(p, threshold_db)
        out.append({"index": i, "text": text, "path": str(p), "duration_s": round(float(dur), 3),
                    "true_speech_start_s": round(float(first), 3), "true_speech_end_s": round(float(last), 3)})
    return out


def run_turn(engine, q: dict[str, Any], out_wav: Path, endpoint_s: float, timeout: float) -> dict[str, Any]:
    t_call = time.time()
    res = engine.talk(q["path"], str(out_wav), realtime=True, timeout=timeout)
    wall = time.time() - t_call
    t0 = res.t0
    new_turns = res.turns
    ev, info = res.events, res.info
    info = dict(info)
    chunks = res.info.get("chunks") or []
    row: dict[str, Any] = {"question": q["index"], "transcript": res.transcript, "reply": res.reply,
                           "first_chunk_text": chunks[0].get("text") if chunks else None,
                           "state": res.state, "errors": res.errors, "talk_wall_s": round(wall, 3),
                           "turns_in_talk": len(new_turns), "t0": t0,
                           "true_speech_end_s": q["true_speech_end_s"],
                           "events": {k: ev[k] for k in EVENT_ORDER if k in ev},
                           "info": {k: r4(v) if isinstance(v, (int, float)) else v for k, v in info.items()
                                    if k != "chunks"}}
    need = ("user_speech_started", "user_speech_stopped", "transcript_final", "llm_first_token", "tts_first_audio",
            "first_reply_sample_out")
    ok = (res.state == "done" and not res.errors and all(k in ev for k in need) and ev["user_speech_started"] >= 0
          and all(info.get(k) is not None for k in ("stt_s", "ttft_s", "synth_s", "speech_end_audio")))
    row["valid"] = bool(ok)
    if not ok:
        return row
    end = q["true_speech_end_s"]
    # the endpointer counts 32 ms windows, one per hop (the mic's block)
    hop = engine.cfg.audio.input_block_ms / 1000
    endpoint_eff = 0.032 + (Endpointer(hop_s=hop).windows_spanning(endpoint_s) - 1) * hop
    v2v = ev["first_reply_sample_out"] - end
    transcript_delay = ev["transcript_final"] - ev["user_speech_stopped"]
    m = {
        "vad_endpoint_delay_s": ev["user_speech_stopped"] - end,
        "stt_s": info["stt_s"],
        "transcript_delay_after_endpoint_s": transcript_delay,
        "llm_ttft_s": info["ttft_s"],
        "tts_first_audio_synth_s": info["synth_s"],
        "voice_to_voice_s": v2v,
        "pipeline_overhead_s": v2v - endpoint_s - transcript_delay - info["ttft_s"] - info["synth_s"],
        "hop_transcript_to_llm_s": ev["llm_first_token"] - ev["transcript_final"] - info["ttft_s"],
    }
    # The critical path from the true speech end to the first sample heard, piece by
    # piece (sums to voice_to_voice_s). With the preemptive reply the STT and the LLM
    # run inside the endpoint silence, so only what is still left at the endpoint counts.
    stop, first_tok, tts = ev["user_speech_stopped"], ev["llm_first_token"], ev["tts_first_audio"]
    b = {
        "vad_hangover_s": info["speech_end_audio"] - end,  # where the VAD put the end vs the true end
        "endpoint_silence_s": endpoint_eff,
        "vad_decision_to_event_s": stop - info["speech_end_audio"] - endpoint_eff,
        "llm_first_token_after_endpoint_s": max(0.0, first_tok - stop),
        "first_clause_and_tts_after_endpoint_s": max(0.0, tts - max(first_tok, stop)),
        "tts_to_first_sample_out_s": ev["first_reply_sample_out"] - max(tts, stop),
    }
    row["metrics"] = {k: r4(v) for k, v in m.items()}
    row["breakdown"] = {k: r4(v) for k, v in b.items()}
    # wall-clock windows (for classifying the pings taken meanwhile)
    a = {k: v + t0 for k, v in ev.items()}
    row["windows"] = {"stt": [a["transcript_final"] - info["stt_s"], a["transcript_final"]],
                      "tts_first": [a["tts_first_audio"] - info["synth_s"], a["tts_first_audio"]],
                      "reply_playback": [a["first_reply_sample_out"], a.get("reply_done", a["first_reply_sample_out"])]}
    return row


def classify_pings(samples: list[tuple], rows: list[dict[str, Any]]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {"stt_running": [], "tts_first_chunk_running": [], "reply_playback": [],
                                   "listening_or_between": []}
    wins = [r["windows"] for r in rows if r.get("windows")]
    for s in samples:
        t = s[2]
        where = "listening_or_between"
        for w in wins:
            if w["stt"][0] <= t <= w["stt"][1]:
                where = "stt_running"
                break
            if w["tts_first"][0] <= t <= w["tts_first"][1]:
                where = "tts_first_chunk_running"
                break
            if w["reply_playback"][0] <= t <= w["reply_playback"][1]:
                where = "reply_playback"  # later chunks are synthesized during it
        out[where].append(s)
    return out
