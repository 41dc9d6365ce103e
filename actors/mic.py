"""Mic stage: a sound device, or a WAV file paced like one.

Emits InputAudioFrames of ``audio.input_block_ms`` (16 ms, the VAD's hop) at
16 kHz to the VAD. A file source is fed at real-time pace (each block when a
real mic would deliver it) and followed by silence, as a live mic would be;
``realtime=False`` feeds it as fast as the pipeline takes it.

Echo path: the engine's own output, read from the shared playback clock for
the same wall-clock span, is the reference of a WebRTC echo canceller, and
its level rides on every frame so the VAD can be stricter while the engine
talks. A file source can also simulate open speakers (the output mixed back
in, delayed and attenuated) and a barge-in (a second file mixed in a set
time after the first reply sample is heard).
"""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque

import numpy as np

from actors.base import Stage, stage_actor
from pipeline.audio.convert import Resampler, load_audio, rms
from pipeline.audio.echo_cancel import LEAK_CORRELATION
from pipeline.audio.echo_path import EchoPath
from pipeline.flow.frames import Frame, FrameError, InputAudioFrame
from pipeline.audio.playback_clock import REF_RATE, PlaybackClock, ReferenceCursor, segment_name
from pipeline.audio.stream_time import StreamClock, StreamTime

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
# how far (16 kHz samples) the canceller's reference may be off the player's stamps before it is
# moved: a device's stamps jitter (2 ms); a file's are exact (the WAV sink stamps its schedule),
# and a new WAV sink per talk restarts them: with 2 ms allowed the reference kept up to 32 samples
# of the last talk's offset, the canceller re-found that shift unguarded and leaked (onset pauses
# early in a reply). 1, not 0: the mic's and the sink's times are not on one grid (rounding)
DEVICE_REF_TOLERANCE = REF_RATE * 2 // 1000
FILE_REF_TOLERANCE = 1
START_WAIT_S = 3.0  # how long start_device waits for the stream's first audio


class MicStage(Stage):
    name = "mic"

    def setup(self) -> None:
        self.block = RATE * self.cfg.audio.input_block_ms // 1000
        self._stop = threading.Event()
        self._delivering = threading.Event()  # the device stream has brought audio
        self._thread: threading.Thread | None = None
        self.pos = 0
        self.done = False
        self.device_errors = 0
        self.reopened = 0
        self._clock: PlaybackClock | None = None
        self._cursor: ReferenceCursor | None = None
        self._ref_tolerance = DEVICE_REF_TOLERANCE
        self._jumps_seen = 0
        self._unsettled_until = 0.0
        self.aec_leaks = 0
        self._clock_tried = 0.0
        self.aec = None
        self._new_echo_path()
        self.simulate_echo = False
        self._barge: dict | None = None  # a second file to mix in once the reply is heard
        self._path_key: tuple = ()  # the echo path the canceller has learnt (see start_file)
        self._delay_probe: deque = deque(maxlen=RATE * 8 // self.block)  # (mic, reference) blocks, for echo_delay()
        self.echo_blocks = 0
        self._stream_time: StreamTime | None = None
        self._capture: StreamClock | None = None

    # ------------------------------------------------------------ echo path
    def _new_echo_path(self) -> None:
        """A new input (file, device, reopened device): the echo path is to be learnt anew,
        and a canceller adapted to another one (or to none) would leak while it re-converges."""
        ms = self.cfg.audio.input_block_ms  # its windows are ~0.5 s and its tail ~0.2 s of blocks
        self.echo_path = EchoPath(window_blocks=max(1, 512 // ms), tail_blocks=max(1, 192 // ms))
        if self.cfg.echo.cancel:
            from pipeline.audio.echo_cancel import EchoCanceller

            self.aec = EchoCanceller(self.block)

    def _playback(self) -> PlaybackClock | None:
        if self._clock is None and time.monotonic() - self._clock_tried > 1.0:
            self._clock_tried = time.monotonic()
            self._clock = PlaybackClock.attach(segment_name(self.cfg.engine.run_id or "", self.session_id))
            self._cursor = None if self._clock is None else ReferenceCursor(self._clock, self._ref_tolerance)
        return self._clock

    def _set_ref_tolerance(self, samples: int) -> None:
        self._ref_tolerance = samples
        if self._cursor is not None:
            self._cursor.tolerance = samples

    def _echo_path(self, pcm: np.ndarray, t_cap: float) -> tuple[np.ndarray, dict]:
        """(the block with the engine's own voice cancelled, the InputAudioFrame's echo fields)."""
        clock = self._playback()
        if clock is None:
            return pcm, {}
        e = self.cfg.echo
        if self.simulate_echo:  # the output leaks back into the mic, as from open speakers
            leak = clock.reference(t_cap - e.simulate_delay_ms / 1000, len(pcm)).astype(np.float32)
            pcm = np.clip(pcm + leak * 10 ** (e.simulate_gain_db / 20), -32768, 32767).astype(np.int16)
        if self._barge is not None:
            pcm = self._mix_barge_in(pcm, t_cap, clock)
        ref = self._cursor.read(t_cap, len(pcm))
        self._delay_probe.append((pcm.copy(), ref.copy()))
        raw_rms = rms(pcm)
        had_echo = self.echo_path.present
        if not self.echo_path.update(pcm, ref):
            if self.aec is not None:
                self.aec.process(pcm, ref)  # keeps its state current; its output would cost the user's voice
            return pcm, {}  # no echo path (headphones): nothing of the engine's voice to guard against
        # the engine's voice as it reaches the mic, before cancellation: the loudest playback of the
        # last 150 ms (the echo of a word arrives after the word; a gap now may carry its tail)
        dur = len(pcm) / RATE
        echo = (clock.level(t_cap - ECHO_REACH_S, t_cap + dur, ECHO_TAIL_S, ECHO_TAIL_DECAY_DB_S)
                * 10 ** ((self.echo_path.coupling_db or 0.0) / 20))
        converging = True
        if self.aec is not None and not had_echo:  # an echo appeared (headphones -> speakers): cold again
            self.aec.reference_samples = 0
        if self._cursor.jumps != self._jumps_seen:
            self._jumps_seen = self._cursor.jumps
            self._unsettled_until = t_cap + RESETTLE_S
        raw = pcm
        # the guard: what the echo can be at most (while the canceller converges), or what it leaves
        loudest, converged = echo * 10 ** (e.guard_db_converging / 20), echo * 10 ** (e.guard_db / 20)
        if self.aec is not None:
            pcm = self.aec.process(pcm, ref)
            converging = self.aec.stats.converging or t_cap < self._unsettled_until
            self.echo_blocks += echo > 0
            if (not converging and echo > 0 and raw_rms <= loudest
                    and rms(pcm) >= converged and self.aec.leak() >= LEAK_CORRELATION):
                # what passes the converged guard, from a mic no louder than the echo can be, is
                # the engine's voice: the canceller lost the echo (its delay moved, the reference
                # did not). Guard as after a jump. (A louder mic is the user talking over: no need)
                self.aec_leaks += 1
                self._unsettled_until = t_cap + RESETTLE_S
                converging = True
        guard = loudest if converging else converged
        # the block before cancellation too: a converging canceller may add echo, so the VAD counts
        # the quieter of the two; and the user talking over the echo is heard sooner in it
        return pcm, {"echo_guard": guard, "echo_level": echo, "raw_pcm": raw if self.aec is not None else None}

    def _mix_barge_in(self, pcm: np.ndarray, t_cap: float, clock: PlaybackClock) -> np.ndarray:
        b = self._barge
        if b["t"] is None:  # wait for the first reply sample to be heard
            rid, _, audible = clock.position(t_cap + len(pcm) / RATE)
            if not audible:
                return pcm
            b["t"] = t_cap + len(pcm) / RATE + b["at"]
            self.event("barge_in_scheduled", t=b["t"], first_heard=t_cap + len(pcm) / RATE)
        start = int(round((t_cap - b["t"]) * RATE))  # index into the barge-in audio of this block's first sample
        lo, hi = max(0, start), min(len(b["audio"]), start + len(pcm))
        if hi <= lo:
            return pcm
        if not b["started"]:
            b["started"] = True
            self.event("barge_in_started", t=b["t"], speech_onset=b["t"] + b["onset"])
        mixed = pcm.astype(np.int32)
        mixed[lo - start:hi - start] += b["audio"][lo:hi]
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    def process(self, frame: Frame) -> None:
        raise FrameError("mic is a source; it takes no frames")

    def _emit_block(self, pcm: np.ndarray, capture_time: float) -> None:
        pcm, echo = self._echo_path(pcm, capture_time)
        self.emit("vad", InputAudioFrame(pcm=pcm, sample_rate=RATE, capture_time=capture_time, stream_pos=self.pos,
                                         **echo))
        self.pos += len(pcm)

    # ------------------------------------------------------------ file
    def start_file(self, path: str, realtime: bool = True, barge_in: str | None = None,
                   barge_in_at: float = 1.5, simulate_echo: bool | None = None) -> dict:
        """Start feeding ``path``; returns its duration and the wall time of sample 0.

        ``barge_in``: a second file mixed in ``barge_in_at`` seconds after the first
        reply sample is heard. ``simulate_echo``: mix the engine's output back in
        (default: ``echo.simulate``).
        """
        audio = load_audio(path, RATE)
        self._barge = None
        if barge_in:
            b = load_audio(barge_in, RATE)
            loud = np.flatnonzero(np.abs(b.astype(np.int32)) > 500)
            self._barge = {"audio": b.astype(np.int32), "at": barge_in_at, "t": None, "started": False,
                           "onset": (loud[0] / RATE) if len(loud) else 0.0}
        self.simulate_echo = self.cfg.echo.simulate if simulate_echo is None else simulate_echo
        self.stop()
        e = self.cfg.echo
        # talks through the same simulated room are one session's turns: the canceller stays
        # converged across them, as on a device; another path (or none) is learnt anew
        path = ("simulated", e.simulate_gain_db, e.simulate_delay_ms) if self.simulate_echo else ("file",)
        if path != self._path_key or not self.simulate_echo:
            self._new_echo_path()
        self._path_key = path
        self._set_ref_tolerance(FILE_REF_TOLERANCE)
        self._stop.clear()
        self.done = False
        self.pos = 0  # stream positions are file positions: the clock of the talk's events
        t0 = time.time()
        self._thread = threading.Thread(target=self._feed_file, args=(audio, t0, realtime), daemon=True)
        self._thread.start()
        return {"duration": len(audio) / RATE, "t0": t0}

    def _feed_file(self, audio: np.ndarray, t0: float, realtime: bool) -> None:
        self.event("input_started", t=t0, source="file")
        trailing = RATE * self.cfg.audio.trailing_silence_ms // 1000
        n_blocks = -(-len(audio) // self.block)
        audio = np.concatenate([audio, np.zeros(n_blocks * self.block - len(audio), np.int16)])
        t_mono = time.monotonic()
        i = 0
        while not self._stop.is_set():
            if i < n_blocks:
                pcm = audio[i * self.block:(i + 1) * self.block]
            elif realtime or (i - n_blocks) * self.block < trailing:
                pcm = np.zeros(self.block, np.int16)  # a live mic keeps delivering silence
                if i == n_blocks + trailing // self.block:
                    self.done = True
                    self.event("input_done", t=time.time())
            else:
                break
            if realtime:  # a block is available once its last sample is captured
                delay = t_mono + (i + 1) * self.block / RATE - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            self._emit_block(pcm, t0 + i * self.block / RATE)
            i += 1
        if not self.done:
            self.done = True
            self.event("input_done", t=time.time())

    # ------------------------------------------------------------ device
    def start_device(self) -> dict:
        from pipeline.audio.devices import check_devices

        info, _ = check_devices(self.cfg.audio.input_device, self.cfg.audio.output_device)
        self.stop()
        self._set_ref_tolerance(DEVICE_REF_TOLERANCE)
        self._stop.clear()
        self._delivering.clear()
        self._thread = threading.Thread(target=self._feed_device, daemon=True)
        self._thread.start()
        # returns once audio flows (~0.1-0.2 s here), so that what the caller plays next is heard
        delivering = self._delivering.wait(START_WAIT_S)
        return {"device": info["name"], "rate": info["default_samplerate"], "delivering": delivering}

    def _feed_device(self) -> None:
        from pipeline.audio.devices import import_sounddevice

        sd = import_sounddevice()
        self.event("input_started", source="device")
        failed = False
        while not self._stop.is_set():  # reopen after a device error: the conversation goes on
            q: queue.Queue = queue.Queue()
            try:
                info = sd.query_devices(self.cfg.audio.input_device or None, kind="input")
                rate = int(info["default_samplerate"])
                rs = Resampler(rate, RATE)
                dev_block = max(1, rate * self.cfg.audio.input_device_block_ms // 1000)
                # PortAudio's ADC times, not when the callback runs; the offset's minimum over ~8 s
                stream_time = self._stream_time = StreamTime(window=max(256, 8 * rate // dev_block))

                def cb(indata, frames, time_info, status):
                    q.put((indata[:, 0].copy(), stream_time.wall(time_info.inputBufferAdcTime, time_info.currentTime)))

                self._new_echo_path()  # (re)opened: maybe another device, another room
                self._path_key = ("device",)
                # a vanished device ends the stream with no exception: finished_callback says so at once
                with sd.InputStream(samplerate=rate, channels=1, dtype="int16", callback=cb, latency="low",
                                    blocksize=dev_block,
                                    device=self.cfg.audio.input_device or None,
                                    finished_callback=lambda: q.put(None)) as stream:
                    if failed:
                        failed = False
                        self.reopened += 1
                        self.event("device_reopened", device="input", device_name=info["name"])
                    capture = self._capture = StreamClock(rate)  # (its smoothing is in seconds, not blocks)
                    pending, n_out = np.zeros(0, np.int16), 0
                    while not self._stop.is_set():
                        try:
                            item = q.get(timeout=1.0)
                        except queue.Empty:
                            item = None if not stream.active else ()
                        if item is None:
                            raise RuntimeError("the input stream ended (device gone?)")
                        if not item:
                            continue
                        data, t_adc = item
                        self._delivering.set()
                        capture.update(t_adc, len(data))
                        pending = np.concatenate([pending, rs(data)])
                        while len(pending) >= self.block:
                            self._emit_block(pending[:self.block], capture.time_of(n_out / RATE))
                            pending = pending[self.block:]
                            n_out += self.block
            except Exception as e:
                if self._stop.is_set():
                    break
                failed = True
                self.device_errors += 1
                self.report_error(f"microphone failed ({e}); reopening in 1 s")
                self._stop.wait(1.0)

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
        return {"samples_sent": self.pos, "device_errors": self.device_errors, "reopened": self.reopened,
                "echo_blocks": self.echo_blocks, "aec_leaks": self.aec_leaks,
                "callback_late_ms": self._stream_time.callback_late_ms() if self._stream_time else {},
                "clock_steps": self._capture.steps if self._capture else 0,
                "clock": self._clock is not None, "reference_jumps": self._cursor.jumps if self._cursor else 0,
                "echo_path": self.echo_path.present, "echo_coupling_db": self.echo_path.coupling_db, "aec": None if self.aec is None else dataclasses.asdict(self.aec.stats)}


MicActor = stage_actor(MicStage)
