"""The echo benchmark's signals: the replies and user phrases (Kokoro, espeak-ng), the
speaker -> mic room model, and the scenes built from them (far end, near end, echo, user)."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from pipeline.audio.convert import read_wav
from pipeline.audio.echo_cancel import BLOCK, RATE
from tests.rigs.espeak import espeak_wav

REPLY = ("Sure, I can help with that. The weather tomorrow looks sunny, with a light breeze in the afternoon. "
         "Would you like me to set a reminder for your morning walk?")
REPLY2 = ("Of course. Paris is the capital of France, and it sits on the river Seine. "
          "Many people visit it every spring to see the gardens.")
USER = "Wait, stop, what about Sunday?"
USER2 = "Hold on, I have a question."
DELAYS_MS = (30, 50, 80)
ECHO_GAIN_DB = -6.0
NOISE_DBFS = -65.0  # RMS of the mic's noise floor
LEAD_S = 0.5  # silence before the reply starts


def espeak_pcm(text: str, voice: str = "en-us", speed: int = 150) -> np.ndarray:
    """espeak-ng speech as 16 kHz mono int16 (sox resamples), no padding."""
    with tempfile.TemporaryDirectory() as d:
        pcm, _ = read_wav(espeak_wav(text, Path(d) / "out.wav", RATE, voice=voice, speed=speed))
    return pcm


def kokoro_pcm(texts: list[str]) -> list[np.ndarray]:
    """Kokoro (the engine's configured voice) at 24 kHz, resampled to 16 kHz as the player's reference."""
    from models.registry import load_kokoro
    from pipeline.audio.convert import Resampler, to_int16
    from pipeline.config import load_config

    cfg = load_config(None)
    tts = load_kokoro(cfg)
    out = []
    for text in texts:
        audio, rate = tts.create(text, voice=cfg.tts.voice, speed=cfg.tts.speed, lang=cfg.tts.lang)
        out.append(Resampler(rate, RATE)(to_int16(np.asarray(audio, np.float32))))
    return out


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[:len(x)]


def room_response(delay_ms: float, gain_db: float = ECHO_GAIN_DB, room: bool = True, seed: int = 0,
                  rt60_s: float = 0.25, drr_db: float = 8.0) -> np.ndarray:
    """Impulse response speaker -> mic: a delay and gain; with ``room`` a small speaker's
    low-pass (~3.5 kHz, no bass below ~150 Hz) and an exponentially decaying tail (by default
    -60 dB at 0.25 s, direct-to-reverberant 8 dB). The peak gain of the direct path is ``gain_db``."""
    d = int(round(delay_ms * RATE / 1000))
    if not room:
        h = np.zeros(d + 1)
        h[d] = 1.0
    else:
        rng = np.random.default_rng(seed)
        tail_n = int(rt60_s * RATE)
        t = np.arange(tail_n) / RATE
        tail = rng.standard_normal(tail_n) * np.exp(-t * 6.9 / rt60_s)  # -60 dB at rt60_s
        tail[:int(0.004 * RATE)] = 0.0  # first reflections after 4 ms
        tail *= 10 ** (-drr_db / 20) / math.sqrt(np.sum(tail ** 2))
        direct = np.zeros(tail_n)
        direct[0] = 1.0
        k = np.arange(-16, 17)
        lp = np.sinc(2 * 3500 / RATE * k) * np.hamming(len(k))  # ~3.5 kHz low-pass
        lp /= lp.sum()
        hp = -np.ones(107) / 107  # crude high-pass: remove the ~150 Hz moving average
        hp[53] += 1.0
        body = np.convolve(np.convolve(direct + tail, lp), hp)
        h = np.concatenate([np.zeros(max(0, d - 16 - 53)), body])  # centre the filters' delay on d
    return h * 10 ** (gain_db / 20)


def echo_of(far: np.ndarray, delay_ms: float, room: bool, gain_db: float = ECHO_GAIN_DB, seed: int = 0,
            **room_kw) -> np.ndarray:
    return _fft_convolve(far.astype(np.float64), room_response(delay_ms, gain_db, room, seed, **room_kw))


def noise(n: int, dbfs: float = NOISE_DBFS, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n) * 32768 * 10 ** (dbfs / 20)


def i16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def dbfs(x: np.ndarray) -> float:
    x = x.astype(np.float64)
    return 10 * math.log10(np.mean(x ** 2) / 32768 ** 2 + 1e-20)


def scene(far_speech: np.ndarray, delay_ms: float, room: bool, user: np.ndarray | None = None,
          user_at_s: float = 0.0, user_gain_db: float = 0.0, echo_gain_db: float = ECHO_GAIN_DB,
          clip: bool = False, seed: int = 0) -> dict:
    """far: LEAD_S of silence, the reply, 1 s of silence; near: its echo + noise (+ the user
    phrase at ``user_at_s``, ``user_gain_db`` relative to its espeak level). ``clip``: a
    speaker driven into soft clipping (tanh) before the room, a nonlinearity AEC3's linear
    filter cannot model."""
    far = np.concatenate([np.zeros(int(LEAD_S * RATE)), far_speech.astype(np.float64), np.zeros(RATE)])
    n = (len(far) // BLOCK) * BLOCK
    far = far[:n]
    played = 32768 * np.tanh(far / 32768 * 3) / 3 * 1.6 if clip else far
    echo = echo_of(played, delay_ms, room, gain_db=echo_gain_db, seed=seed)
    track = np.zeros(n)
    if user is not None:
        k = int(user_at_s * RATE)
        u = user.astype(np.float64)[: n - k] * 10 ** (user_gain_db / 20)
        track[k:k + len(u)] = u
    near = echo + noise(n, seed=seed + 1) + track
    return {"far": i16(far), "near": i16(near), "echo": echo, "user": track}


def twice(s: dict) -> dict:
    """The same scene played twice in a row: the second time AEC3 has converged ("warm")."""
    return {k: np.concatenate([v, v]) for k, v in s.items()}


def warm_then(warmup: dict, s: dict) -> dict:
    return {k: np.concatenate([warmup[k], s[k]]) for k in ("far", "near")}
