"""Mic stage: the voice conversation's input, from an audio source.

Emits InputAudioFrames of ``audio.input_block_ms`` (16 ms, the VAD's hop) at
16 kHz to the VAD, in the conversation it was started for. The source
(``pipeline.audio.sources``) is a sound device, a WAV file paced like one, or
audio a client pushes; a test rig may wrap it to add a room (tests/rigs/room.py).

Echo path: the engine's own output, read from the shared playback clock for
the same wall-clock span, is the reference of a WebRTC echo canceller, and
its level rides on every frame so the VAD can be stricter while the engine
talks.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque

import numpy as np

from actors.base import Stage, stage_actor
from pipeline.audio.convert import rms
from pipeline.audio.echo_cancel import LEAK_CORRELATION
from pipeline.audio.echo_path import EchoPath
from pipeline.audio.playback_clock import PlaybackClock, ReferenceCursor, segment_name
from pipeline.audio.sources import AudioSource, DeviceSource, FileSource, PushSource
from pipeline.flow.events import Event, InputStarted
from pipeline.flow.frames import Frame, FrameError, InputAudioFrame

RATE = 16000
ECHO_REACH_S = 0.15  # the longest acoustic echo delay guarded against
# a live room rings on after the reply pauses (RT60 0.6 s, direct-to-reverberant 0 dB, room model:
# its tail reached the mic 150-400 ms after the last word, louder than the echo bound of the last
# 150 ms): older playback counts too, decaying as such a room does (-60 dB in 0.6 s)
ECHO_TAIL_S = 0.6
ECHO_TAIL_DECAY_DB_S = 100.0
# after the reference jumped (the output's latency stepped: on PulseAudio whenever another
# client connects to the sink), AEC3 re-finds the echo for about a second and leaks meanwhile:
# the guard treats it as converging again for this long. The same after a leak seen in the
# output (the echo's delay moved and the reference did not: EchoCanceller.leak)
RESETTLE_S = 2.0
# ... and the jump says how far off the stamps were: on the slow machine under load the player's
# stream stalled (0.5 s without a callback) and its stamps moved by 5-760 ms, once 2 s. For as long,
# the echo's level is looked for that much further either side: the mic heard the reply's words
# while the stamps placed them elsewhere, the guard read a pause there, and the engine cut in on
# itself (tests/integration/test_devices_session.py, open speaker). Nor does the echo path count as
# gone then (EchoPath ``trusted``): the reference it is compared with may not be what played
MAX_TIMING_DOUBT_S = 2.5
MIN_TIMING_DOUBT_S = 0.02  # smaller jumps are the two clocks' drift (2 ms steps seen): no doubt
# ... and while the output's stream stalls the clock gets no blocks at all: what plays meanwhile and
# once it resumes is not where any stamp says (measured there: 5 reopens in two replies, the speaker
# stuttering in 40 ms bursts its stamps had placed in a pause, and the engine paused on its own voice).
# A clock whose last block ends this far before the mic's audio is stale: as far off as its age
STALE_CLOCK_S = 0.1
# how far (16 kHz samples) the canceller's reference may be off the player's stamps before it is
# moved: a device's stamps jitter (2 ms); a file's are exact (the WAV sink stamps its schedule),
# and a new WAV sink per talk restarts them: with 2 ms allowed the reference kept up to 32 samples
# of the last talk's offset, the canceller re-found that shift unguarded and leaked (onset pauses
# early in a reply). 1, not 0: the mic's and the sink's times are not on one grid (rounding).
# Each source says its own (AudioSource.ref_tolerance: 2 ms for a device, 1 sample for a file)

# AEC3 may call itself converged while it still lets the echo through (measured on the slow machine
# under load, 14 reopens of the speaker in five replies: 2 s after a jump its output was the echo
# at -8 dB, and the guard, dropping at once from the converging +3 dB to the converged -10 dB,
# let four windows of it pause the reply). So after losing the echo the canceller must show it
# took the echo out before its guard is the converged one: SETTLED_EVIDENCE_S of echo blocks at
# least SETTLED_ERLE_DB under the mic; a block less than LOST_ERLE_DB under starts the count again
SETTLED_EVIDENCE_S, SETTLED_ERLE_DB, LOST_ERLE_DB = 0.2, 15.0, 10.0
SETTLED_MIN_RMS = 50.0  # quieter blocks are the room's noise more than the echo: no evidence
START_WAIT_S = 3.0  # how long start_device waits for the stream's first audio


class MicStage(Stage):
    name = "mic"

    def setup(self) -> None:
        self.block_size = RATE * self.cfg.audio.input_block_ms // 1000  # samples a block (MicContext)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source: AudioSource | None = None
        self.session_id = ""  # the conversation the mic feeds
        self.pos = 0
        self._clock: PlaybackClock | None = None
        self._cursor: ReferenceCursor | None = None
        self._ref_tolerance = 32
        self._jumps_seen = 0
        self._unsettled_until = 0.0
        self._settled_s = 0.0  # seconds of echo the canceller has shown it takes out (SETTLED_EVIDENCE_S)
        self._doubt_s, self._doubt_until = 0.0, 0.0  # how far off the stamps may be, until when
        self.aec_leaks = 0
        self.stale_blocks = 0  # mic blocks heard while the playback clock was stale (an output stall)
        self._clock_tried = 0.0
        self.aec = None
        self.new_echo_path()
        self._path_key: tuple = ()  # the echo path the canceller has learnt (see start)
        self._delay_probe: deque = deque(maxlen=RATE * 8 // self.block_size)  # (mic, reference) blocks, for echo_delay()
        self.echo_blocks = 0

    # ------------------------------------------------------------ echo path
    def new_echo_path(self) -> None:
        """A new input (file, device, reopened device): the echo path is to be learnt anew,
        and a canceller adapted to another one (or to none) would leak while it re-converges."""
        ms = self.cfg.audio.input_block_ms  # its windows are ~0.5 s and its tail ~0.2 s of blocks
        self.echo_path = EchoPath(window_blocks=max(1, 512 // ms), tail_blocks=max(1, 192 // ms))
        if self.cfg.echo.cancel:
            from pipeline.audio.echo_cancel import EchoCanceller

            self.aec = EchoCanceller(self.block_size)

    def playback(self) -> PlaybackClock | None:
        if self._clock is None and time.monotonic() - self._clock_tried > 1.0:
            self._clock_tried = time.monotonic()
            self._clock = PlaybackClock.attach(segment_name(self.cfg.engine.run_id or "", "player"))
            self._cursor = None if self._clock is None else ReferenceCursor(self._clock, self._ref_tolerance)
        return self._clock

    def _set_ref_tolerance(self, samples: int) -> None:
        self._ref_tolerance = samples
        if self._cursor is not None:
            self._cursor.tolerance = samples

    def _timing_doubt(self, clock: PlaybackClock, t_cap: float) -> float:
        """How far (s) the playback's stamps may be off now: the largest reference jump of the
        last RESETTLE_S of at least MIN_TIMING_DOUBT_S, or the clock's age while it is stale
        (else 0). Any jump also starts a resettling of the canceller."""
        if self._cursor.jumps != self._jumps_seen:
            self._jumps_seen = self._cursor.jumps
            self._unsettle(t_cap)
            jump_s = abs(self._cursor.jump_sizes[-1]) / RATE if self._cursor.jump_sizes else 0.0
            self._doubt(jump_s, t_cap)
        # (a closed output is no stall; nor one stalled for longer than any doubt: its echo is gone)
        stale_s = t_cap - clock.written_until()
        if clock.output_open and STALE_CLOCK_S <= stale_s <= MAX_TIMING_DOUBT_S:
            self.stale_blocks += 1
            self._doubt(stale_s, t_cap)
            self._unsettle(t_cap)  # the canceller's reference is silence meanwhile
        return self._doubt_s if t_cap < self._doubt_until else 0.0

    def _unsettle(self, t_cap: float) -> None:
        """The canceller is to re-find the echo: its guard is the converging one for RESETTLE_S, and
        until it shows it takes the echo out again."""
        self._unsettled_until = t_cap + RESETTLE_S
        self._settled_s = 0.0

    def _settled(self, raw_rms: float, out_rms: float, echo: float, loudest: float, dur: float) -> bool:
        """Whether the canceller has shown it takes the echo out since it last lost it."""
        if self.aec.stats.converging:
            self._settled_s = 0.0
            return False
        if (self._settled_s < SETTLED_EVIDENCE_S and echo > 0
                and max(SETTLED_MIN_RMS, 0.1 * echo) <= raw_rms <= loudest):
            # (a mic louder than the echo can be is the user: no evidence either way)
            if out_rms <= raw_rms * 10 ** (-SETTLED_ERLE_DB / 20):
                self._settled_s += dur
            elif out_rms > raw_rms * 10 ** (-LOST_ERLE_DB / 20):
                self._settled_s = 0.0
        return self._settled_s >= SETTLED_EVIDENCE_S

    def _doubt(self, off_s: float, t_cap: float) -> None:
        if off_s >= MIN_TIMING_DOUBT_S:
            self._doubt_s = min(MAX_TIMING_DOUBT_S, max(off_s, self._doubt_s if t_cap < self._doubt_until else 0.0))
            self._doubt_until = t_cap + RESETTLE_S

    def _echo_path(self, pcm: np.ndarray, t_cap: float) -> tuple[np.ndarray, dict]:
        """(the block with the engine's own voice cancelled, the InputAudioFrame's echo fields)."""
        clock = self.playback()
        if clock is None:
            return pcm, {}
        e = self.cfg.echo
        ref = self._cursor.read(t_cap, len(pcm))
        self._delay_probe.append((pcm.copy(), ref.copy()))
        raw_rms = rms(pcm)
        had_echo = self.echo_path.present
        doubt = self._timing_doubt(clock, t_cap)
        if not self.echo_path.update(pcm, ref, trusted=doubt == 0.0):
            if self.aec is not None:
                self.aec.process(pcm, ref)  # keeps its state current; its output would cost the user's voice
            return pcm, {}  # no echo path (headphones): nothing of the engine's voice to guard against
        # the engine's voice as it reaches the mic, before cancellation: the loudest playback of the
        # last 150 ms (the echo of a word arrives after the word; a gap now may carry its tail)
        dur = len(pcm) / RATE
        # (no further than what was written: a stalled output's clock has nothing past that, and what
        # its speaker still plays is the newest audio written, late)
        end = None if self._cursor.next is None else min(self._cursor.next + int(doubt * RATE), clock.samples_written)
        echo = (clock.level(t_cap - ECHO_REACH_S - doubt, t_cap + dur + doubt, ECHO_TAIL_S, ECHO_TAIL_DECAY_DB_S,
                            end_index=end) * 10 ** ((self.echo_path.coupling_db or 0.0) / 20))
        converging = True
        if self.aec is not None and not had_echo:  # an echo appeared (headphones -> speakers): cold again
            self.aec.reference_samples = 0
        raw = pcm
        # the guard: what the echo can be at most (while the canceller converges), or what it leaves
        loudest, converged = echo * 10 ** (e.guard_db_converging / 20), echo * 10 ** (e.guard_db / 20)
        if self.aec is not None:
            pcm = self.aec.process(pcm, ref)
            out_rms = rms(pcm)
            converging = not self._settled(raw_rms, out_rms, echo, loudest, dur) or t_cap < self._unsettled_until
            self.echo_blocks += echo > 0
            if (not converging and echo > 0 and raw_rms <= loudest
                    and out_rms >= converged and self.aec.leak() >= LEAK_CORRELATION):
                # what passes the converged guard, from a mic no louder than the echo can be, is
                # the engine's voice: the canceller lost the echo (its delay moved, the reference
                # did not). Guard as after a jump. (A louder mic is the user talking over: no need)
                self.aec_leaks += 1
                self._unsettle(t_cap)
                converging = True
        guard = loudest if converging else converged
        # the block before cancellation too: a converging canceller may add echo, so the VAD counts
        # the quieter of the two; and the user talking over the echo is heard sooner in it
        return pcm, {"echo_guard": guard, "echo_level": echo, "echo_measured": self.echo_path.coupling_db is not None,
                     "echo_timing_doubt": doubt, "raw_pcm": raw if self.aec is not None else None}

    def process(self, frame: Frame) -> None:
        raise FrameError("mic is a source; it takes no frames")

    # ------------------------------------------------------------ the source's context (MicContext)
    def block(self, pcm: np.ndarray, capture_time: float) -> None:
        pcm, echo = self._echo_path(pcm, capture_time)
        self.emit(InputAudioFrame(pcm=pcm, sample_rate=RATE, capture_time=capture_time, stream_pos=self.pos,
                                  session_id=self.session_id, **echo))
        self.pos += len(pcm)

    def error(self, message: str) -> None:
        self.report_error(message, self.session_id)

    def event(self, ev: Event) -> None:
        ev.session_id = self.session_id
        super().event(ev)

    # ------------------------------------------------------------ starting a source
    def start(self, source: AudioSource, session_id: str) -> dict:
        """Feed ``session_id`` from ``source`` (a file, or a rig wrapping one); returns what the
        source says of itself (a file: its duration and the wall time ``t0`` of sample 0)."""
        self.stop()
        self.session_id = session_id
        key = source.echo_path_key()
        # talks through the same (simulated) room are one session's turns: the canceller stays
        # converged across them, as on a device; another path (or a new file) is learnt anew
        if key != self._path_key or key[0] == "file":
            self.new_echo_path()
        self._path_key = key
        self._set_ref_tolerance(source.ref_tolerance)
        self.source = source
        self._stop.clear()
        self.pos = 0  # stream positions are the source's: the clock of a talk's events
        t0 = source.start_time() if hasattr(source, "start_time") else time.time()
        self.event(InputStarted(t=t0, source=source.kind))
        self._thread = threading.Thread(target=self._feed, args=(source,), name="mic-feed", daemon=True)
        self._thread.start()
        return source.describe()

    def start_file(self, path: str, session_id: str, realtime: bool = True) -> dict:
        return self.start(FileSource(path, realtime, self.cfg.audio.trailing_silence_ms), session_id)

    def start_device(self, session_id: str) -> dict:
        """The sound device; returns once it brings audio (up to START_WAIT_S), so that what the
        caller plays next is heard (``delivering``: False if it did not in time)."""
        from pipeline.audio.devices import check_devices

        info, _ = check_devices(self.cfg.audio.input_device, self.cfg.audio.output_device)
        source = DeviceSource(self.cfg.audio.input_device, self.cfg.audio.input_device_block_ms)
        self.start(source, session_id)
        delivering = source.delivering.wait(START_WAIT_S)  # ~0.1-0.2 s here
        return {"device": info["name"], "rate": info["default_samplerate"], "delivering": delivering}

    def start_push(self, session_id: str) -> dict:
        """Audio a client sends with ``push_audio`` (16 kHz mono int16)."""
        return self.start(PushSource(), session_id)

    def push_audio(self, pcm: np.ndarray) -> bool:
        src = self.source
        return isinstance(src, PushSource) and src.feed(pcm)

    def _feed(self, source: AudioSource) -> None:
        try:
            source.run(self, self._stop)
        except Exception as e:  # a source that cannot go on: say why, the engine keeps running
            self.report_error(f"mic source {source.kind} failed: {type(e).__name__}: {e}", self.session_id)

    def echo_delay(self) -> dict:
        """Where the engine's voice sits in the mic relative to its reference, over the last 8 s
        (cross-correlation): a positive delay is causal (the echo follows its reference), which the
        canceller needs; a negative one means the mic's or the player's timestamps are off."""
        if len(self._delay_probe) < 16:
            return {"delay_ms": None, "peak": 0.0}
        mic = np.concatenate([m for m, _ in self._delay_probe]).astype(np.float64)
        ref = np.concatenate([r for _, r in self._delay_probe]).astype(np.float64)
        if not ref.any() or not mic.any():
            return {"delay_ms": None, "peak": 0.0}
        n = 1 << int(np.ceil(np.log2(2 * len(mic))))
        xc = np.fft.irfft(np.fft.rfft(mic, n) * np.conj(np.fft.rfft(ref, n)), n)
        lim = RATE * 3 // 10  # +-300 ms
        lags = np.concatenate([np.arange(0, lim), np.arange(-lim, 0)])
        vals = np.concatenate([xc[:lim], xc[-lim:]])
        k = int(np.argmax(np.abs(vals)))
        norm = np.sqrt(np.dot(mic, mic) * np.dot(ref, ref))
        return {"delay_ms": round(1000 * lags[k] / RATE, 2), "peak": round(float(abs(vals[k]) / norm), 3)}

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def extra_stats(self) -> dict:
        src = self.source.stats() if hasattr(self.source, "stats") else {}
        return {"samples_sent": self.pos, "device_errors": src.get("device_errors", 0),
                "reopened": src.get("reopened", 0), "echo_blocks": self.echo_blocks, "aec_leaks": self.aec_leaks,
                "stale_blocks": self.stale_blocks, "callback_late_ms": src.get("callback_late_ms", {}),
                "clock_steps": src.get("clock_steps", 0),
                "clock": self._clock is not None, "reference_jumps": self._cursor.jumps if self._cursor else 0,
                "reference_jump_ms": [round(j * 1000 / RATE, 1) for j in self._cursor.jump_sizes] if self._cursor else [],
                "echo_path": self.echo_path.present, "echo_coupling_db": self.echo_path.coupling_db,
                "echo_path_releases": self.echo_path.releases, "echo_delays_ms": [round(d * 1000 / RATE, 1) for d in self.echo_path.delays], "aec": None if self.aec is None else dataclasses.asdict(self.aec.stats)}


MicActor = stage_actor(MicStage)
