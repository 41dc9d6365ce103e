"""Real models on real (espeak-ng) speech: the VAD and STT stages on their own."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail

from actors.stt import transcribe
from actors.vad import VoiceDetector
from pipeline.flow.events import Event, SpeechOnset, SpeechStarted, SpeechStopped
from pipeline.audio.convert import load_audio, to_float32
from pipeline.config import CONFIG_DIR, load_config
from pipeline.flow.frames import InputAudioFrame
from tests.conftest import speech_span

pytestmark = pytest.mark.integration


class RecordingVAD:
    """The real voice detector of one conversation, its outputs recorded instead of sent:
    ``sent`` what goes to the STT, ``events`` the typed events for the session."""

    def __init__(self, cfg):
        self.sent: list = []
        self.events: list = []
        self.det = VoiceDetector(cfg, "default", self._record)
        self.hop = self.det.hop

    def _record(self, frame):
        (self.events if isinstance(frame, Event) else self.sent).append(frame)

    def setup(self):
        pass

    def push(self, frame):
        self.det.process(frame)

    @property
    def talk_over_windows(self) -> int:
        return self.det.talk_over_windows


def run_vad(cfg, pcm: np.ndarray) -> RecordingVAD:
    vad = RecordingVAD(cfg)
    vad.setup()
    b = vad.hop  # the mic's blocks
    for i in range(0, len(pcm) - b + 1, b):
        vad.push(InputAudioFrame(pcm=pcm[i:i + b], sample_rate=16000, stream_pos=i))
    return vad


def test_vad_finds_speech_span_within_100ms(speech, test_config):
    wav = speech("The weather is lovely today, shall we go for a walk?", pad_s=(1.0, 1.5))
    pcm = load_audio(wav)
    true_start, true_end = speech_span(pcm, 16000)
    vad = run_vad(test_config, pcm)
    starts = [e for e in vad.events if isinstance(e, SpeechStarted)]
    stops = [e for e in vad.events if isinstance(e, SpeechStopped)]
    assert len(starts) == 1 and len(stops) == 1, vad.events
    assert abs(starts[0].audio_time - true_start) <= 0.1
    assert abs(stops[0].audio_time - true_end) <= 0.1
    # the endpoint is declared after the configured silence, not before
    assert stops[0].detect_lag >= test_config.vad.endpoint_silence_ms / 1000
    # what STT receives is bracketed: start, audio (with pre-roll), stop
    kinds = [f.kind for f in vad.sent]
    assert kinds[0] == "UserStartedSpeakingFrame" and kinds[-1] == "UserStoppedSpeakingFrame"
    first_audio = next(f for f in vad.sent if f.kind == "InputAudioFrame")
    assert first_audio.stream_pos / 16000 <= true_start  # pre-roll keeps the onset


def test_vad_ignores_noise_and_silence(test_config):
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(16000 * 3) * 2000).astype(np.int16)
    hum = (np.sin(2 * np.pi * 120 * np.arange(16000 * 2) / 16000) * 3000).astype(np.int16)
    vad = run_vad(test_config, np.concatenate([np.zeros(8000, np.int16), noise, hum]))
    assert vad.events == []


def test_stt_transcribes_known_sentence(speech, whisper, test_config):
    wav = speech("Please remind me to buy milk and bread tomorrow morning.")
    text = transcribe(whisper, to_float32(load_audio(wav)), "en", 1, test_config.stt.no_speech_threshold).lower()
    for word in ("remind", "milk", "tomorrow", "morning"):
        assert word in text, text


def test_tts_speaks_what_it_is_given(whisper, test_config):
    from models.registry import load_kokoro

    tts = load_kokoro(test_config)
    audio, rate = tts.create("Good morning, the coffee is ready.", voice=test_config.tts.voice,
                             lang=test_config.tts.lang)
    from pipeline.audio.convert import Resampler, to_int16

    pcm16k = Resampler(rate, 16000)(to_int16(np.asarray(audio, np.float32)))
    text = transcribe(whisper, to_float32(pcm16k), "en", 1, 0.6).lower()
    assert "morning" in text and "coffee" in text, text


def test_short_audio_context_transcribes_a_long_turn(speech, whisper):
    """The reduced encoder context (actors/stt.py) keeps a 10+ s turn intact."""
    from actors.stt import _context_frames, transcribe_short

    wav = speech("Yesterday I walked to the market with my sister. We bought apples and a large melon, "
                 "and then we sat in the park near the river until the sun went down.", pad_s=(0.2, 0.0))
    audio = to_float32(load_audio(wav))
    assert len(audio) / 16000 > 9 and _context_frames(len(audio) / 16000) < 3000
    text = transcribe_short(whisper, audio, "en", 1, 0.6).lower()
    for word in ("market", "sister", "apples", "park", "river", "sun"):
        assert word in text, text


def test_a_synthesis_in_flight_can_be_aborted(test_config):
    """An interrupt stops the clause being synthesized (RunOptions.terminate), not after it."""
    import threading

    from models.registry import load_kokoro

    tts = load_kokoro(test_config)
    long_text = ("This is a long sentence that takes the speech model several seconds to synthesize, "
                 "because it goes on and on about nothing in particular, clause after clause, for a while.")
    result: dict = {}

    def speak():
        tts.sess.tag = 7
        try:
            result["audio"] = tts.create(long_text, voice=test_config.tts.voice, lang=test_config.tts.lang)
        except Exception as e:
            result["error"] = e

    th = threading.Thread(target=speak, daemon=True)
    th.start()
    # deadlines sized for a CPU 3x slower than the 2-core dev machine (model running after ~0.03 s
    # there, the aborted run returning within ~1 ms)
    deadline = time.monotonic() + 30
    while not tts.sess._running and th.is_alive() and time.monotonic() < deadline:
        th.join(0.005)
    assert tts.sess._running, f"the synthesis never started running: {result}"
    aborted = tts.sess.aborted
    assert not tts.sess.abort_if(lambda tag: tag == 8)  # another response's abort leaves it alone
    assert tts.sess.aborted == aborted
    assert tts.sess.abort_if(lambda tag: tag == 7)
    assert tts.sess.aborted == aborted + 1
    th.join(30)
    assert not th.is_alive(), "the aborted synthesis did not return within 30 s"
    # it stopped on the terminate flag: no audio, and not any other failure passing for an abort
    assert "audio" not in result, "the synthesis ran to its end: the abort did not stop it"
    err = result.get("error")
    assert isinstance(err, OrtFail) and "terminate flag" in str(err), repr(err)
    # the session stays usable
    audio, _ = tts.create("Still here.", voice=test_config.tts.voice, lang=test_config.tts.lang)
    assert len(audio) > 0 and tts.sess.aborted == aborted + 1


def test_two_lanes_on_one_model_are_aborted_one_at_a_time(test_config):
    """The TTS service's two lanes share one session: an abort stops the dead reply's run only."""
    import threading

    from models.registry import load_kokoro

    tts = load_kokoro(test_config)
    text = "This sentence is long enough that both runs are still going when one of them is stopped."
    result: dict = {}

    def speak(tag):
        tts.sess.tag = tag  # per thread
        try:
            result[tag] = tts.create(text, voice=test_config.tts.voice, lang=test_config.tts.lang)
        except Exception as e:
            result[tag] = e

    threads = [threading.Thread(target=speak, args=(tag,), daemon=True) for tag in (7, 8)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 30
    while len(tts.sess._running) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sorted(tag for _, tag in tts.sess._running.values()) == [7, 8]
    assert tts.sess.abort_if(lambda tag: tag == 7)
    for th in threads:
        th.join(60)
    assert isinstance(result[7], OrtFail) and "terminate flag" in str(result[7]), repr(result[7])
    audio, _ = result[8]
    assert len(audio) > 0  # the other lane's run went on to its end


def _echo_frames(echo: np.ndarray, user: np.ndarray, suppressed_s: float, block: int) -> list[InputAudioFrame]:
    """Mic frames as the mic stage makes them under open-speaker echo: ``raw_pcm`` holds the echo
    (the engine's voice at -6 dB) plus the user, ``pcm`` what AEC3 leaves: the user only, with
    their first ``suppressed_s`` muted (its double-talk onset). ``echo_level`` is the mic stage's
    bound: the loudest 20 ms of the echo over the last 150 ms. ``block``: the mic's block."""
    raw = (echo.astype(np.int32) + user).clip(-32768, 32767).astype(np.int16)
    heard = np.flatnonzero(np.abs(user) > 300)
    out = user.copy()
    if len(heard):
        out[heard[0]:heard[0] + int(suppressed_s * 16000)] = 0
    e = echo.astype(np.float32)
    rms20 = np.sqrt(np.convolve(e * e, np.ones(320) / 320, mode="same"))
    frames = []
    for i in range(0, len(raw) - block + 1, block):
        level = float(rms20[max(0, i - 2400):i + block].max())
        frames.append(InputAudioFrame(pcm=out[i:i + block], sample_rate=16000, stream_pos=i,
                                      raw_pcm=raw[i:i + block], echo_level=level,
                                      echo_guard=level * 10 ** (-10 / 20)))
    return frames


def _reply_echo(speech, seconds: float) -> np.ndarray:
    reply = load_audio(speech("Once upon a time there was a small red fox who lived by a quiet river, and every "
                              "morning she walked down to the water.", name="reply"))
    return (np.resize(reply, int(seconds * 16000)) * 0.5).astype(np.int16)  # -6 dB


def test_vad_hears_the_user_over_the_echo_before_the_canceller_lets_them_through(speech, test_config):
    # AEC3 mutes the first ~100 ms of a user talking over the echo (measured 96-128 ms on the
    # virtual devices): the onset comes from the mic before cancellation, inside that muted span
    echo = _reply_echo(speech, 4.0)
    words = load_audio(speech("What about the weather?", name="user", pad_s=(1.5, 0.5)))
    user = np.zeros(len(echo), np.int16)
    user[:min(len(words), len(user))] = words[:len(user)]
    t_user = np.flatnonzero(np.abs(user) > 300)[0] / 16000
    vad = RecordingVAD(test_config)
    vad.setup()
    for f in _echo_frames(echo, user, suppressed_s=0.128, block=vad.hop):
        vad.push(f)
    onsets = [e for e in vad.events if isinstance(e, SpeechOnset)]
    assert onsets and t_user - 0.032 <= onsets[0].audio_time < t_user + 0.128, (t_user, onsets)
    assert vad.talk_over_windows > 0
    # speech starts once the canceller lets the user through, back-dated to where they began
    starts = [e for e in vad.events if isinstance(e, SpeechStarted)]
    assert starts and t_user - 0.064 <= starts[0].audio_time < t_user + 0.128, (t_user, starts)


def test_the_echo_under_an_underrated_guard_pauses_at_most_and_starts_nothing(speech, test_config):
    """The echo bound 20 dB too low (the playback's stamps off, as after a stalled speaker on the
    slow machine): the mic before cancellation is "louder than the echo can be" and Silero calls it
    speech, so the talk-over test lifts it, enough windows in a row to start speech. The canceller
    removed it all, though: that may pause the reply (an onset), never start a turn."""
    echo = _reply_echo(speech, 6.0)
    vad = RecordingVAD(test_config)
    vad.setup()
    for f in _echo_frames(echo, np.zeros(len(echo), np.int16), suppressed_s=0.0, block=vad.hop):
        f.echo_level, f.echo_guard = f.echo_level * 0.1, f.echo_guard * 0.1
        vad.push(f)
    assert vad.talk_over_windows >= vad.det.endpointer.min_speech_windows  # enough to start, lifted alone
    assert not [e for e in vad.events if isinstance(e, SpeechStarted)], vad.events


def test_the_echo_under_an_underrated_guard_in_timing_doubt_does_not_even_pause(speech, test_config):
    """The same, with the mic saying the playback's timing is in doubt (a stalled output, or its
    stamps just jumped: echo_timing_doubt): the talk-over test sits out, so not even an onset."""
    echo = _reply_echo(speech, 6.0)
    vad = RecordingVAD(test_config)
    vad.setup()
    for f in _echo_frames(echo, np.zeros(len(echo), np.int16), suppressed_s=0.0, block=vad.hop):
        f.echo_level, f.echo_guard, f.echo_timing_doubt = f.echo_level * 0.1, f.echo_guard * 0.1, 0.3
        vad.push(f)
    assert vad.events == [] and vad.talk_over_windows == 0 and vad.det.talk_over_doubted > 0, vad.events


def test_a_16ms_hop_hears_the_user_over_the_echo_sooner(speech, test_config):
    """The same user over the same echo, starting at 8 offsets 4 ms apart: a window every 16 ms
    finds the onset no later than one every 32 ms each time (its second model state sees the
    very windows the 32 ms VAD sees), and sooner on average."""
    echo = _reply_echo(speech, 4.0)
    words = load_audio(speech("What about the weather?", name="user", pad_s=(1.5, 0.5)))
    found: dict[int, list[float]] = {16: [], 32: []}
    for shift in range(0, 8 * 64, 64):
        user = np.zeros(len(echo), np.int16)
        part = words[:len(echo) - shift]
        user[shift:shift + len(part)] = part
        for ms in (16, 32):
            cfg = load_config(CONFIG_DIR / "test.toml", [f"audio.input_block_ms={ms}"])
            vad = RecordingVAD(cfg)
            vad.setup()
            for f in _echo_frames(echo, user, suppressed_s=0.128, block=vad.hop):
                vad.push(f)
            onset = next(e for e in vad.events if isinstance(e, SpeechOnset))
            found[ms].append(onset.audio_time + onset.detect_lag)  # when it was known
    assert all(a <= b + 1e-9 for a, b in zip(found[16], found[32])), found
    assert np.mean(found[16]) < np.mean(found[32]), found


def test_vad_takes_the_echo_alone_for_no_one(speech, test_config):
    vad = RecordingVAD(test_config)
    vad.setup()
    echo = _reply_echo(speech, 6.0)
    for f in _echo_frames(echo, np.zeros(len(echo), np.int16), suppressed_s=0.0, block=vad.hop):
        vad.push(f)
    assert vad.events == [] and vad.talk_over_windows == 0
