"""Player stage: a sound device, or a WAV file clocked like one.

Both sinks pull fixed blocks from a ``PlayoutBuffer`` and stamp every event
with the time its sample is heard (device output latency included). The WAV
sink records the exact sample position of each chunk, so what was heard can
be mapped back to the words.
"""
from __future__ import annotations

import queue
import threading
import time
import wave
from typing import Any

import numpy as np

from actors.base import Stage, stage_actor
from pipeline.audio import Resampler
from pipeline.frames import ControlFrame, EndOfTurnFrame, Frame, FrameError, HoldFrame, TTSAudioFrame
from pipeline.playout import PlayEvent, PlayoutBuffer, Segment


class WavSink:
    """Writes what would be heard, clocked in real time (or as fast as it comes)."""

    def __init__(self, path: str, rate: int, block: int, realtime: bool, buf: PlayoutBuffer, on_events) -> None:
        self.rate, self.block, self.realtime = rate, block, realtime
        self.buf, self.on_events = buf, on_events
        self.samples_written = 0
        self._wav = wave.open(path, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._active = 0  # responses started and not done: write while > 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wav-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.block / self.rate
        next_t = time.monotonic()
        while not self._stop.is_set():
            if self.realtime:
                next_t += period
                delay = next_t - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                elif delay < -0.5:  # we fell far behind (suspend?): resync rather than burst
                    next_t = time.monotonic()
            else:
                if not self.buf.wait(timeout=0.1):
                    continue
            t_block = time.time()
            pcm, events = self.buf.read(self.block)
            started = self._active > 0 or any(e.kind == "response_start" for e in events)
            if started:
                base = self.samples_written
                self._wav.writeframes(pcm.tobytes())
                self.samples_written += len(pcm)
            else:
                base = None
            for e in events:
                if e.kind == "response_start":
                    self._active += 1
                elif e.kind == "response_done":
                    self._active = max(0, self._active - 1)
            if events:
                self.on_events(events, t_block, base)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._wav.close()


class DeviceSink:
    """One long-lived sounddevice OutputStream (opening one per chunk costs ~200 ms)."""

    def __init__(self, device: str, rate: int, block: int, buf: PlayoutBuffer, on_events) -> None:
        from pipeline.devices import import_sounddevice

        sd = import_sounddevice()
        self.buf, self.on_events, self.block, self.rate = buf, on_events, block, rate
        self.samples_written = 0
        self.status_errors = 0
        self.stream = sd.OutputStream(samplerate=rate, channels=1, dtype="int16", blocksize=block,
                                      device=device or None, latency="low", callback=self._callback)
        self.stream.start()

    def _callback(self, outdata, frames, time_info, status) -> None:
        if status:
            self.status_errors += 1
        pcm, events = self.buf.read(frames)
        outdata[:, 0] = pcm
        if events:
            # when this block's first sample reaches the speaker, on the wall clock
            heard = time.time() + max(0.0, time_info.outputBufferDacTime - time_info.currentTime)
            self.on_events(events, heard, self.samples_written)
        self.samples_written += frames

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


class PlayerStage(Stage):
    name = "player"

    def setup(self) -> None:
        self.buf = PlayoutBuffer(live=self.gate.is_live)
        self.sink: WavSink | DeviceSink | None = None
        self.rate = self.cfg.audio.output_rate
        self._resamplers: dict[int, Resampler] = {}
        self.chunks: list[dict[str, Any]] = []  # exact sample positions of each chunk heard
        self._events: queue.Queue = queue.Queue()
        threading.Thread(target=self._event_loop, name="player-events", daemon=True).start()

    def open_wav(self, path: str, rate: int, realtime: bool) -> int:
        self.close()
        self.rate = self.cfg.audio.output_rate or rate
        block = max(1, self.rate * self.cfg.audio.output_block_ms // 1000)
        self.sink = WavSink(path, self.rate, block, realtime, self.buf, self._on_events)
        return self.rate

    def open_device(self, rate: int) -> int:
        self.close()
        self.rate = self.cfg.audio.output_rate or rate
        block = max(1, self.rate * self.cfg.audio.output_block_ms // 1000)
        self.sink = DeviceSink(self.cfg.audio.output_device, self.rate, block, self.buf, self._on_events)
        return self.rate

    def close(self) -> dict:
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        return {"chunks": self.chunks}

    def process(self, frame: Frame) -> None:
        if isinstance(frame, TTSAudioFrame):
            if self.sink is None:
                raise FrameError("player has no output open (open_wav/open_device first)")
            rs = self._resamplers.setdefault(frame.response_id, Resampler(frame.sample_rate, self.rate))
            self.buf.add(Segment(frame.response_id, rs(frame.pcm), frame.text, frame.text_start, frame.text_end,
                                 frame.chunk_index))
        elif isinstance(frame, EndOfTurnFrame):
            self.buf.end(frame.response_id)
            self._resamplers.pop(frame.response_id, None)
        else:
            raise FrameError(f"player does not take {frame.kind}")

    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        if isinstance(frame, HoldFrame):
            self.buf.hold(frame.response_id, frame.hold)
        if changed:
            for rid in self.buf.drop():
                self._events.put(("reply_stopped", rid, time.time(), {"played_samples": None}))

    # The sink thread (or the audio callback) must not block on Ray: hand off.
    def _on_events(self, events: list[PlayEvent], t_block: float, base: int | None) -> None:
        for e in events:
            t = t_block + e.offset / self.rate
            if e.kind == "response_start":
                self._events.put(("first_reply_sample_out", e.response_id, t, {}))
            elif e.kind == "chunk_start" and e.segment is not None:
                self.chunks.append({"response_id": e.response_id, "chunk": e.segment.chunk_index,
                                    "text": e.segment.text, "text_start": e.segment.text_start,
                                    "text_end": e.segment.text_end,
                                    "sample_start": None if base is None else base + e.offset, "t_start": t})
            elif e.kind == "chunk_end" and e.segment is not None:
                for c in reversed(self.chunks):
                    if c["response_id"] == e.response_id and c["chunk"] == e.segment.chunk_index:
                        c["sample_end"] = None if base is None else base + e.offset
                        c["t_end"] = t
                        break
            elif e.kind == "response_done":
                self._events.put(("reply_done", e.response_id, t, {}))

    def _event_loop(self) -> None:
        while True:
            name, rid, t, data = self._events.get()
            if name == "reply_done" or name == "reply_stopped":
                data = {**data, "chunks": [c for c in self.chunks if c["response_id"] == rid],
                        "output_rate": self.rate}
            self.event(name, rid, t=t, **data)

    def extra_stats(self) -> dict:
        return {"samples_written": getattr(self.sink, "samples_written", 0), "rate": self.rate}

    def playback_position(self) -> tuple[int, int]:
        """(response_id, sample within it) most recently handed to the output."""
        return self.buf.now_playing


PlayerActor = stage_actor(PlayerStage)
