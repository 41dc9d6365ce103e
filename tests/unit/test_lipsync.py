"""Lip-sync from the shared playback clock: what is audible moves the mouth."""
from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from avatar.lipsync import LipSync, envelope, lag_and_correlation, level_db
from pipeline.audio.playback_clock import REF_RATE, PlaybackClock

BLOCK = 320  # 20 ms at 16 kHz, as the player's blocks
FPS = 30
FRAME = 1.0 / FPS


@pytest.fixture
def clock():
    c = PlaybackClock.create(f"kokoro-test-lipsync-{uuid.uuid4().hex[:8]}", output_rate=24000)
    yield c
    c.close()


def speechlike(seconds: float = 5.0, seed: int = 0) -> np.ndarray:
    """Noise in syllable-like bursts (80-250 ms, random loudness), short gaps and a few pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * REF_RATE)
    t = np.arange(n) / REF_RATE
    env = np.zeros(n)
    pos = 0.1
    while pos < seconds - 0.3:
        dur = rng.uniform(0.08, 0.25)
        sel = (t >= pos) & (t < pos + dur)
        env[sel] = rng.uniform(0.2, 1.0) * np.sin(np.pi * (t[sel] - pos) / dur)
        pos += dur + (rng.uniform(0.3, 0.6) if rng.random() < 0.15 else rng.uniform(0.01, 0.06))
    return (rng.standard_normal(n) * env * 6000 + rng.standard_normal(n) * 3).astype(np.int16)


def noise(seconds: float, rms: float, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * REF_RATE)) * rms).astype(np.int16)


def play(clock: PlaybackClock, ls: LipSync, sig: np.ndarray, t0: float, fps: float = FPS, phase: float = 0.0,
         rids=None, ahead: float = 0.02) -> list[tuple[float, float]]:
    """Feed ``sig`` (heard from wall time ``t0``) to the clock block by block, each written
    ``ahead`` before it is heard as the player does, and sample the mouth at ``fps``."""
    blocks = [(t0 + i / REF_RATE, sig[i:i + BLOCK], 1 if rids is None else rids(i), i)
              for i in range(0, len(sig), BLOCK)]
    track, k, t = [], 0, t0 + phase
    while t < t0 + len(sig) / REF_RATE:
        while k < len(blocks) and blocks[k][0] <= t + ahead:
            bt, ref, rid, pos = blocks[k]
            clock.write(ref, bt, rid, pos * 3 // 2 if rid else 0)
            k += 1
        track.append((t, ls.mouth(clock, t)))
        t += 1.0 / fps
    return track


def at(track, t0, a, b):
    return np.array([m for t, m in track if a <= t - t0 < b])


def test_no_clock_or_nothing_written_is_a_closed_mouth(clock):
    ls = LipSync()
    assert ls.mouth(None, time.time()) == 0.0
    assert ls.mouth(clock, time.time()) == 0.0


@pytest.mark.parametrize("phase", [0.0, 0.011, 0.023])
def test_mouth_follows_the_envelope_within_one_frame(clock, phase):
    sig, t0 = speechlike(), time.time() - 60.0  # stamps in the past: no waiting
    track = play(clock, LipSync(), sig, t0, phase=phase)
    lag, corr = lag_and_correlation(track, sig, REF_RATE, t0)
    assert abs(lag) <= FRAME and corr > 0.9, (lag, corr)


def test_mouth_follows_espeak_speech_within_one_frame(clock, tmp_path):
    from pipeline.audio.convert import load_audio
    from tests.rigs.espeak import espeak_wav

    try:
        path = espeak_wav("Well, I think the capital of France is Paris. It is a lovely city, isn't it?",
                          tmp_path / "s.wav", REF_RATE, pad_s=(0.3, 0.3))
    except RuntimeError as e:
        pytest.fail(str(e))
    sig, t0 = load_audio(path, REF_RATE), time.time() - 60.0
    track = play(clock, LipSync(), sig, t0)
    lag, corr = lag_and_correlation(track, sig, REF_RATE, t0)
    assert abs(lag) <= FRAME and corr > 0.85, (lag, corr)


def test_a_pause_in_the_voice_closes_the_mouth(clock):
    # voice, 500 ms of near-silence (still the reply's audio, audible), voice
    sig = np.concatenate([noise(0.6, 3000), noise(0.5, 3, seed=2), noise(0.6, 3000, seed=3)])
    t0 = time.time() - 60.0
    track = play(clock, LipSync(), sig, t0)
    assert at(track, t0, 0.1, 0.6).min() > 0.6
    assert at(track, t0, 0.85, 1.05).max() < 0.05  # closed within a few release time constants
    assert at(track, t0, 1.25, 1.7).min() > 0.6


@pytest.mark.parametrize("phase", [0.0, 0.007, 0.019, 0.031])
@pytest.mark.parametrize("how", ["player", "zeros"])
def test_an_interruption_closes_the_mouth_at_the_first_frame(clock, phase, how):
    cut = 1.0  # seconds after t0, on a block boundary as the player's cuts are
    sig = noise(2.0, 3000)
    n = int(cut * REF_RATE)
    if how == "player":
        # a cut or a pause at the player: its 5 ms fade-out, then silence, in blocks of response 0
        fade = np.linspace(1, 0, REF_RATE // 200)
        sig[n:n + len(fade)] = (sig[n:n + len(fade)] * fade).astype(np.int16)
        sig[n + len(fade):] = 0
        rids = lambda i: 1 if i < n else 0  # noqa: E731
    else:  # the reply's own blocks, silent
        sig[n:] = 0
        rids = None
    t0 = time.time() - 60.0
    track = play(clock, LipSync(), sig, t0, phase=phase, rids=rids)
    before = [m for t, m in track if t - t0 < cut]
    after = [m for t, m in track if t - t0 >= cut]
    assert before[-1] > 0.6
    assert after[0] == 0.0 and max(after) == 0.0  # closed from the very first frame shown after it


def test_attack_is_faster_than_release_with_their_time_constants(clock):
    # rise from silence, hold, fall to near-silence (still audible): sampled every 1 ms
    sig = np.concatenate([noise(0.3, 3, seed=2), noise(0.5, 6000), noise(0.6, 3, seed=3)])
    t0 = time.time() - 60.0
    ls = LipSync(attack_ms=40, release_ms=80, window_ms=5, lead_ms=0)
    track = dict((round((t - t0) * 1000), m) for t, m in play(clock, ls, sig, t0, fps=1000))
    assert abs(track[300 + 40] - (1 - np.exp(-1))) < 0.08  # one attack time constant after the onset
    assert abs(track[800 + 80] - np.exp(-1)) < 0.08  # one release time constant after the fall
    assert track[300 + 40] > 1 - track[800 + 40]  # in 40 ms the attack covers more of the way than the release


def test_smoothing_does_not_depend_on_the_frame_rate(clock):
    sig = np.concatenate([noise(0.3, 3, seed=2), noise(0.5, 6000), noise(0.6, 3, seed=3)])
    t0 = time.time() - 60.0
    slow = play(clock, LipSync(), sig, t0, fps=30)
    fast = dict((round((t - t0) * 600), m) for t, m in play(clock, LipSync(), sig, t0, fps=60))
    for t, m in slow:
        s = t - t0
        if 0.45 < s < 0.8 or 0.95 < s < 1.4:  # away from the steps, where a frame samples the edge
            assert abs(fast[round(s * 600)] - m) < 0.03, s


def test_lag_and_correlation_measures_a_known_offset():
    sig = speechlike(seed=3)
    times = np.arange(0.0, 5.0, FRAME)
    env = envelope(sig, times)
    for delay in (0.05, -0.03):
        late = envelope(sig, times - delay)  # mouth(t) shows the sound of t - delay
        db = level_db(late)
        track = list(zip(100.0 + times, np.maximum(db, db.max() - 40)))
        lag, corr = lag_and_correlation(track, sig, REF_RATE, 100.0)
        assert abs(lag - delay) <= 0.002 and corr > 0.99, (delay, lag, corr)
    assert lag_and_correlation(list(zip(times, env * 0)), sig, REF_RATE, 0.0) == (0.0, 0.0)


def test_envelope_is_the_rms_of_a_centred_window():
    sig = np.concatenate([np.zeros(1600), np.full(1600, 1000), np.zeros(1600)]).astype(np.int16)
    env = envelope(sig, np.array([0.05, 0.15, 0.25, 0.1, -1.0]), window_ms=20)
    assert env[0] == 0 and env[1] == pytest.approx(1000) and env[2] == 0
    assert env[3] == pytest.approx(1000 / np.sqrt(2))  # half the window on the step
    assert env[4] == 0  # outside the signal
