"""EchoCanceller (WebRTC AEC3) on espeak-ng speech through a simulated speaker -> mic path.

The far end is an espeak-ng reply; the mic hears it 30/50/80 ms later at -6 dB
through a small room (low-pass + 0.25 s reverb) with low noise, as in
benchmarks/echo_cancel.py (whose scenes and measures these tests share:
benchmarks/lib/echo_scene.py, echo_measure.py). Limits are the measured values with
margin: ERLE 34-41 dB cold / 42 dB warm (limits 25 / 30);
residual echo Silero max <= 0.12 (playback threshold 0.7); the user phrase over a
converged canceller starts the Endpointer 0.16-0.19 s after its onset (limit 0.3).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.lib.echo_measure import Silero, cancel, detection, erle_energy, speech_onset_end, starts
from benchmarks.lib.echo_scene import USER, dbfs, echo_of, espeak_pcm, i16, noise, scene, twice, warm_then
from pipeline.audio.convert import rms
from pipeline.audio.echo_cancel import (AEC3_DELAY, BLOCK, FRAME, LEAK_CORRELATION, PLAYBACK_VAD_THRESHOLD, RATE,
                                  WARMUP_VAD_THRESHOLD, EchoCanceller)

FAR = "Sure, I can help with that. The weather tomorrow looks sunny, with a light breeze in the afternoon."
DELAYS = (30, 50, 80)


@pytest.fixture(scope="module")
def far():
    return espeak_pcm(FAR)


@pytest.fixture(scope="module")
def user():
    return espeak_pcm(USER, voice="en-us+f3", speed=160)  # another voice than the engine's


@pytest.fixture(scope="module")
def silero():
    return Silero()


@pytest.fixture(scope="module")
def echo_runs(far):
    """Per delay: the reply played twice (cold, then converged) through the room, cancelled."""
    runs = {}
    for d in DELAYS:
        s = scene(far, d, room=True)
        both = twice(s)
        runs[d] = (s, both, cancel(both["near"], both["far"]))
    return runs


@pytest.mark.parametrize("delay_ms", DELAYS)
def test_erle_cold_and_converged(echo_runs, delay_ms):
    s, _, r = echo_runs[delay_ms]
    n = len(s["near"])
    cold = erle_energy(s["near"], r["out"][:n], s["echo"])
    warm = erle_energy(s["near"], r["out"][n:], s["echo"])
    assert cold >= 25.0, f"{delay_ms} ms: ERLE over the first reply {cold} dB (measured 36-41)"
    assert warm >= 30.0, f"{delay_ms} ms: ERLE once converged {warm} dB (measured ~42)"


@pytest.mark.parametrize("delay_ms", DELAYS)
def test_silero_does_not_fire_on_residual_echo(echo_runs, silero, delay_ms):
    s, both, r = echo_runs[delay_ms]
    m = len(s["near"]) // BLOCK
    p = silero.probs(r["out"])
    # the gating thresholds (vad_threshold) are what the VAD would use block by block
    assert int(np.sum(p >= r["thr"])) == 0, f"{delay_ms} ms: Silero crossed the gating threshold on residual echo"
    assert p[m:].max() < 0.5 <= PLAYBACK_VAD_THRESHOLD, f"converged residual scored {p[m:].max():.2f}"
    # the same thresholds on the raw mic (no AEC) do fire: the check above has teeth
    raw = silero.probs(both["near"])
    assert starts(raw, r["thr"]) >= 3
    assert starts(raw[m:], PLAYBACK_VAD_THRESHOLD) >= 3


@pytest.mark.parametrize("delay_ms", DELAYS)
def test_user_heard_in_double_talk(far, user, silero, delay_ms):
    """The user speaks 2 s into a reply, at about the echo's level, once AEC3 has converged."""
    warm = scene(far, delay_ms, room=True)
    at = 2.5
    s = scene(far, delay_ms, room=True, user=user, user_at_s=at, user_gain_db=-6.0)
    w = warm_then(warm, s)
    r = cancel(w["near"], w["far"])
    k = len(warm["near"])
    p = silero.probs(r["out"][k:])
    on, end = speech_onset_end(user)
    d = detection(p, at + on, at + end, r["thr"][k // BLOCK:])
    assert d["first"] is not None and d["first"] <= 0.2, d  # measured 0.09-0.12 s
    assert d["start"] is not None and d["start"] <= 0.3, d  # measured 0.16-0.19 s
    assert d["frac"] >= 0.4, d  # measured 0.59-0.65 of the phrase's windows


def test_far_silent_passes_the_user(user, silero):
    n = (len(user) + RATE) // BLOCK * BLOCK
    near = np.zeros(n, np.int16)
    near[8000:8000 + len(user)] = user
    r = cancel(near, np.zeros(n, np.int16))
    assert abs(dbfs(r["out"]) - dbfs(near)) < 1.0
    on, end = speech_onset_end(user)
    before = detection(silero.probs(near), 0.5 + on, 0.5 + end, 0.5)
    after = detection(silero.probs(r["out"]), 0.5 + on, 0.5 + end, 0.5)
    assert after["start"] is not None and after["start"] <= before["start"] + 0.032
    assert after["frac"] >= before["frac"] - 0.05


def test_latency_is_what_it_says(user):
    """The output is the input delayed by latency_samples: 128 of framing + 128 of AEC3."""
    aec = EchoCanceller()
    assert (aec.framing_samples, aec.latency_samples) == (128, 128 + AEC3_DELAY)
    assert aec.framing_samples < FRAME  # under 10 ms
    n = (len(user) + RATE) // BLOCK * BLOCK
    near = np.zeros(n, np.int16)
    near[4000:4000 + len(user)] = user
    out = np.concatenate([aec.process(near[i:i + BLOCK], np.zeros(BLOCK, np.int16)) for i in range(0, n, BLOCK)])
    x, y = near.astype(np.float64), out.astype(np.float64)
    lags = range(0, 400)
    best = max(lags, key=lambda k: float(np.dot(x[:n - k], y[k:])))
    assert best == aec.latency_samples
    assert EchoCanceller(block=480).framing_samples == 0


def test_odd_block_lengths_give_the_same_stream(far):
    """Blocks of any length give the same output samples as exact 10 ms blocks, only later
    (AEC3 gets render and capture 10 ms frames in the same order whatever the caller's blocks),
    and the framing delay stays under 10 ms (the native library aborts the process on a
    partial frame, so this also checks none is ever passed)."""
    s = scene(far[:RATE * 2], 50, room=True)
    n = len(s["near"]) // FRAME * FRAME
    near, farr = s["near"][:n], s["far"][:n]
    ref = EchoCanceller(block=FRAME)
    a = np.concatenate([ref.process(near[i:i + FRAME], farr[i:i + FRAME]) for i in range(0, n, FRAME)])
    rng = np.random.default_rng(3)
    for block in (1, BLOCK):  # block=1: the worst-case framing delay (159) from the start
        odd = EchoCanceller(block=block)
        pieces, i = [], 0
        while i < n:
            k = int(rng.choice([1, 7, 100, 159, 161, 333, 512, 1000]))
            pieces.append(odd.process(near[i:i + k], farr[i:i + k]))
            assert len(pieces[-1]) == len(near[i:i + k])
            i += k
        assert odd.framing_samples < FRAME
        if block == 1:
            b = np.concatenate(pieces)
            shift = odd.latency_samples - ref.latency_samples
            assert shift == FRAME - 1
            assert np.array_equal(b[shift:], a[:n - shift])


def test_stats_and_gating(far):
    aec = EchoCanceller(warmup_s=1.0)
    z = np.zeros(BLOCK, np.int16)
    aec.process(z, z)
    assert not aec.stats.far_active and aec.vad_threshold(0.5) == 0.5
    s = scene(far, 50, room=True)
    thresholds, erle = [], []
    for i in range(0, len(s["near"]), BLOCK):
        aec.process(s["near"][i:i + BLOCK], s["far"][i:i + BLOCK])
        thresholds.append(aec.vad_threshold(0.5))
        erle.append(aec.stats.erle_db)
        if aec.stats.far_active:
            assert aec.stats.far_dbfs > -100.0
    assert math.isinf(WARMUP_VAD_THRESHOLD) and thresholds.count(WARMUP_VAD_THRESHOLD) > 0
    assert not aec.stats.converging and aec.reference_samples >= RATE
    assert PLAYBACK_VAD_THRESHOLD in thresholds
    assert np.median([e for e in erle if e > 0]) > 20.0
    for _ in range(20):  # 640 ms of silence: the echo tail is over
        aec.process(z, z)
    assert not aec.stats.far_active and aec.stats.erle_db == 0.0 and aec.vad_threshold(0.5) == 0.5


def _leak_trace(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Per block: (mic RMS, output RMS, leak())."""
    aec = EchoCanceller()
    rows = []
    for i in range(0, len(near) // BLOCK * BLOCK, BLOCK):
        out = aec.process(near[i:i + BLOCK], far[i:i + BLOCK])
        rows.append((rms(near[i:i + BLOCK]), rms(out), aec.leak()))
    return np.array(rows)


@pytest.mark.parametrize("before_ms, after_ms", [(50, 120), (80, 40), (50, 20)])
def test_leak_sees_the_echo_let_through_after_its_delay_moved(far, before_ms, after_ms):
    """The echo's delay moves mid-reply and the reference does not (a resyncing output):
    AEC3, long converged, lets the echo through. ``leak()`` is what tells the mic."""
    s = scene(far, before_ms, room=True)
    n = len(s["far"])
    played = s["far"].astype(np.float64)
    at = int(n * 0.6) // BLOCK * BLOCK
    moved = np.concatenate([echo_of(played, before_ms, True)[:at], echo_of(played, after_ms, True)[at:]])
    near = np.concatenate([s["near"], i16(moved + noise(n, seed=3))])  # the first play converges it
    r = _leak_trace(near, np.concatenate([s["far"], s["far"]]))
    k = (n + at) // BLOCK
    loud = lambda x: x[(x[:, 1] >= x[:, 0] * 10 ** (-10 / 20)) & (x[:, 0] > 100)]  # would pass the converged guard
    converged, leaked = r[n // BLOCK + 8:k], loud(r[k:])
    assert len(loud(converged)) == 0 and converged[:, 2].max() < LEAK_CORRELATION  # measured max 0.09
    # it leaks, within 6 dB of the mic at times (AEC3 spreads run to run: 5 of 82 runs stayed under full level)
    assert len(leaked) >= 5 and (leaked[:, 1] >= leaked[:, 0] * 10 ** (-6 / 20)).any()
    assert (leaked[:5, 2] >= LEAK_CORRELATION).any(), leaked[:5, 2]  # early (measured: by the third loud block)


@pytest.mark.parametrize("gain_db", [-10.0, -6.0])
def test_the_user_over_a_converged_canceller_is_no_leak(far, user, gain_db):
    """What passes a converged canceller while a soft user talks (4 dB under the echo, and at
    its level: the mic asks only about those) is the user: no leak over the onset, when the VAD
    decides (measured here 0.11-0.14; 0.46 at most over 18 onsets, espeak on espeak)."""
    warm = scene(far, 50, room=True)
    s = scene(far, 50, room=True, user=user, user_at_s=2.0, user_gain_db=gain_db)
    r = _leak_trace(np.concatenate([warm["near"], s["near"]]), np.concatenate([warm["far"], s["far"]]))
    on, _ = speech_onset_end(user)
    first = (len(warm["near"]) + int((2.0 + on) * RATE)) // BLOCK
    onset = r[first - 2:first + 16]  # the phrase's first half second
    heard = onset[onset[:, 1] > 100]
    assert len(heard) >= 8  # the user passes the canceller
    assert heard[:, 2].max() < LEAK_CORRELATION, heard[:, 2]


@pytest.mark.parametrize("near, far, rate, match", [
    (np.zeros(512, np.float32), np.zeros(512, np.int16), 16000, "int16"),
    (np.zeros(512, np.int16), np.zeros(512, np.float32), 16000, "far must be int16"),
    (np.zeros(512, np.int16), np.zeros(480, np.int16), 16000, "same time"),
    (np.zeros(512, np.int16), np.zeros(512, np.int16), 48000, "16000 Hz"),
    (np.zeros((512, 2), np.int16), np.zeros((512, 2), np.int16), 16000, "mono"),
    ([0] * 512, np.zeros(512, np.int16), 16000, "numpy"),
])
def test_bad_input_raises(near, far, rate, match):
    aec = EchoCanceller()
    with pytest.raises(ValueError, match=match):
        aec.process(near, far, sample_rate=rate)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="delay_hint_ms"):
        EchoCanceller(delay_hint_ms=600)
    with pytest.raises(ValueError, match="block"):
        EchoCanceller(block=0)
