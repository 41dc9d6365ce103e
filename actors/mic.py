"""Mic stage: a sound device, or a WAV file paced like one.

Emits 32 ms InputAudioFrames at 16 kHz to the VAD. A file source is fed at
real-time pace (each block when a real mic would deliver it) and followed by
silence, as a live mic would be; ``realtime=False`` feeds it as fast as the
pipeline takes it.
"""
from __future__ import annotations

import queue
import threading
import time

import numpy as np

from actors.base import Stage, stage_actor
from pipeline.audio import Resampler, load_audio
from pipeline.frames import Frame, FrameError, InputAudioFrame

RATE = 16000


class MicStage(Stage):
    name = "mic"

    def setup(self) -> None:
        self.block = RATE * self.cfg.audio.input_block_ms // 1000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pos = 0
        self.done = False
        self.device_errors = 0

    def process(self, frame: Frame) -> None:
        raise FrameError("mic is a source; it takes no frames")

    def _emit_block(self, pcm: np.ndarray, capture_time: float) -> None:
        self.emit("vad", InputAudioFrame(pcm=pcm, sample_rate=RATE, capture_time=capture_time, stream_pos=self.pos))
        self.pos += len(pcm)

    # ------------------------------------------------------------ file
    def start_file(self, path: str, realtime: bool = True) -> dict:
        """Start feeding ``path``; returns its duration and the wall time of sample 0."""
        audio = load_audio(path, RATE)
        self.stop()
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
        from pipeline.devices import check_devices

        info, _ = check_devices(self.cfg.audio.input_device, self.cfg.audio.output_device)
        self.stop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._feed_device, daemon=True)
        self._thread.start()
        return {"device": info["name"], "rate": info["default_samplerate"]}

    def _feed_device(self) -> None:
        from pipeline.devices import import_sounddevice

        sd = import_sounddevice()
        self.event("input_started", source="device")
        while not self._stop.is_set():  # reopen after a device error: the conversation goes on
            q: queue.Queue = queue.Queue()
            try:
                info = sd.query_devices(self.cfg.audio.input_device or None, kind="input")
                rate = int(info["default_samplerate"])
                rs = Resampler(rate, RATE)

                def cb(indata, frames, time_info, status):
                    q.put((indata[:, 0].copy(), time.time() - max(0.0, time_info.currentTime
                                                                   - time_info.inputBufferAdcTime)))

                with sd.InputStream(samplerate=rate, channels=1, dtype="int16", callback=cb, latency="low",
                                    blocksize=rate * self.cfg.audio.input_block_ms // 1000,
                                    device=self.cfg.audio.input_device or None) as stream:
                    pending, t_first = np.zeros(0, np.int16), None
                    while not self._stop.is_set():
                        try:
                            data, t_cap = q.get(timeout=1.0)
                        except queue.Empty:
                            if not stream.active:
                                raise RuntimeError("input stream stopped delivering audio")
                            continue
                        if t_first is None or len(pending) == 0:
                            t_first = t_cap
                        pending = np.concatenate([pending, rs(data)])
                        while len(pending) >= self.block:
                            self._emit_block(pending[:self.block], t_first)
                            pending = pending[self.block:]
                            t_first += self.block / RATE
            except Exception as e:
                self.device_errors += 1
                self.report_error(f"microphone failed ({e}); reopening in 1 s")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def extra_stats(self) -> dict:
        return {"samples_sent": self.pos, "device_errors": self.device_errors}


MicActor = stage_actor(MicStage)
