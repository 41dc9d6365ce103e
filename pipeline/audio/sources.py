"""Where the mic's audio comes from: a sound device, a WAV file paced like one, or audio
pushed in by a client.

A source runs on the mic's feeding thread and hands over 16 kHz int16 blocks of the
mic's size with the wall time of their first sample (``MicContext.block``); the mic
does the rest (echo cancellation, the VAD's frames). A source that can fail and come
back (a device) says so through the context. Test rigs wrap a source to mix in what a
room would add (tests/rigs/room.py); the product's sources carry only the signal.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Protocol

import numpy as np

from pipeline.audio.convert import Resampler, load_audio
from pipeline.flow.events import Event

RATE = 16000


class MicContext(Protocol):
    """What the mic offers its source."""

    block_size: int  # samples at 16 kHz

    def block(self, pcm: np.ndarray, capture_time: float) -> None: ...
    def event(self, ev: Event) -> None: ...
    def error(self, message: str) -> None: ...
    def new_echo_path(self) -> None: ...
    def playback(self) -> Any: ...  # the shared PlaybackClock, or None


class AudioSource:
    kind = "source"
    realtime = True
    # how far (16 kHz samples) the canceller's reference may drift off the player's stamps
    # before it is moved (see actors/mic.py); a device's stamps jitter, a file's do not
    ref_tolerance = 32

    def echo_path_key(self) -> tuple:
        """The same key on two runs: the same room, and the canceller keeps what it learnt."""
        return (self.kind, id(self))

    def describe(self) -> dict[str, Any]:
        return {"source": self.kind}

    def run(self, ctx: MicContext, stop: threading.Event) -> None:
        raise NotImplementedError


class FileSource(AudioSource):
    """A WAV (any rate/channels) at real-time pace, then silence as a live mic would
    deliver; ``realtime=False`` feeds it as fast as the pipeline takes it."""

    kind = "file"
    ref_tolerance = 1  # the WAV sink stamps its schedule: exact, up to rounding

    def __init__(self, path: str, realtime: bool = True, trailing_silence_ms: int = 1500) -> None:
        self.path, self.realtime, self.trailing_silence_ms = str(path), realtime, trailing_silence_ms
        self.audio = load_audio(self.path, RATE)  # fails here, in the caller, on a bad file
        self.t0 = 0.0

    def describe(self) -> dict[str, Any]:
        return {"source": "file", "duration": len(self.audio) / RATE, "t0": self.t0}

    def echo_path_key(self) -> tuple:
        return ("file", id(self))  # each file is a new input: the echo path is learnt anew

    def start_time(self) -> float:
        self.t0 = time.time()
        return self.t0

    def run(self, ctx: MicContext, stop: threading.Event) -> None:
        from pipeline.flow.events import InputDone

        block, t0 = ctx.block_size, self.t0
        trailing = RATE * self.trailing_silence_ms // 1000
        n_blocks = -(-len(self.audio) // block)
        audio = np.concatenate([self.audio, np.zeros(n_blocks * block - len(self.audio), np.int16)])
        t_mono = time.monotonic()
        i, done = 0, False
        while not stop.is_set():
            if i < n_blocks:
                pcm = audio[i * block:(i + 1) * block]
            elif self.realtime or (i - n_blocks) * block < trailing:
                pcm = np.zeros(block, np.int16)  # a live mic keeps delivering silence
                if i == n_blocks + trailing // block:
                    done = True
                    ctx.event(InputDone(t=time.time()))
            else:
                break
            if self.realtime:  # a block is available once its last sample is captured
                delay = t_mono + (i + 1) * block / RATE - time.monotonic()
                if delay > 0:
                    stop.wait(delay)
            ctx.block(pcm, t0 + i * block / RATE)
            i += 1
        if not done:
            ctx.event(InputDone(t=time.time()))


class PushSource(AudioSource):
    """Audio a client sends (16 kHz mono int16, any block size), fed as it arrives; its
    capture time is when it arrived, less its own length."""

    kind = "push"

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=500)

    def feed(self, pcm: np.ndarray) -> bool:
        try:
            self._q.put_nowait((np.asarray(pcm, np.int16).ravel(), time.time()))
            return True
        except queue.Full:  # the pipeline is far behind: drop rather than grow without bound
            return False

    def run(self, ctx: MicContext, stop: threading.Event) -> None:
        pending, t_first = np.zeros(0, np.int16), 0.0
        while not stop.is_set():
            try:
                pcm, t_arrived = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if not len(pending):
                t_first = t_arrived - len(pcm) / RATE
            pending = np.concatenate([pending, pcm])
            while len(pending) >= ctx.block_size:
                ctx.block(pending[:ctx.block_size], t_first)
                pending = pending[ctx.block_size:]
                t_first += ctx.block_size / RATE


class DeviceSource(AudioSource):
    """The sound device's input stream, reopened after an error (the conversation goes on)."""

    kind = "device"
    ref_tolerance = RATE * 2 // 1000  # a device's stamps jitter (2 ms)

    def __init__(self, device: str = "", device_block_ms: int = 10) -> None:
        self.device, self.device_block_ms = device, device_block_ms
        self.delivering = threading.Event()  # the stream has brought audio
        self.device_errors = 0
        self.reopened = 0
        self.stream_time = None
        self.capture = None

    def echo_path_key(self) -> tuple:
        return ("device", self.device)

    def run(self, ctx: MicContext, stop: threading.Event) -> None:
        from pipeline.audio.devices import import_sounddevice
        from pipeline.audio.stream_time import StreamClock, StreamTime
        from pipeline.flow.events import DeviceReopened

        sd = import_sounddevice()
        failed = False
        while not stop.is_set():  # reopen after a device error: the conversation goes on
            q: queue.Queue = queue.Queue()
            try:
                info = sd.query_devices(self.device or None, kind="input")
                rate = int(info["default_samplerate"])
                rs = Resampler(rate, RATE)
                dev_block = max(1, rate * self.device_block_ms // 1000)
                # PortAudio's ADC times, not when the callback runs; the offset's minimum over ~8 s
                stream_time = self.stream_time = StreamTime(window=max(256, 8 * rate // dev_block))

                def cb(indata, frames, time_info, status):
                    q.put((indata[:, 0].copy(), stream_time.wall(time_info.inputBufferAdcTime, time_info.currentTime)))

                ctx.new_echo_path()  # (re)opened: maybe another device, another room
                # a vanished device ends the stream with no exception: finished_callback says so at once
                with sd.InputStream(samplerate=rate, channels=1, dtype="int16", callback=cb, latency="low",
                                    blocksize=dev_block, device=self.device or None,
                                    finished_callback=lambda: q.put(None)) as stream:
                    if failed:
                        failed = False
                        self.reopened += 1
                        ctx.event(DeviceReopened(device="input", device_name=info["name"]))
                    capture = self.capture = StreamClock(rate)  # (its smoothing is in seconds, not blocks)
                    pending, n_out = np.zeros(0, np.int16), 0
                    while not stop.is_set():
                        try:
                            item = q.get(timeout=1.0)
                        except queue.Empty:
                            item = None if not stream.active else ()
                        if item is None:
                            raise RuntimeError("the input stream ended (device gone?)")
                        if not item:
                            continue
                        data, t_adc = item
                        self.delivering.set()
                        capture.update(t_adc, len(data))
                        pending = np.concatenate([pending, rs(data)])
                        while len(pending) >= ctx.block_size:
                            ctx.block(pending[:ctx.block_size], capture.time_of(n_out / RATE))
                            pending = pending[ctx.block_size:]
                            n_out += ctx.block_size
            except Exception as e:
                if stop.is_set():
                    break
                failed = True
                self.device_errors += 1
                ctx.error(f"microphone failed ({e}); reopening in 1 s")
                stop.wait(1.0)

    def stats(self) -> dict[str, Any]:
        return {"device_errors": self.device_errors, "reopened": self.reopened,
                "callback_late_ms": self.stream_time.callback_late_ms() if self.stream_time else {},
                "clock_steps": self.capture.steps if self.capture else 0}
