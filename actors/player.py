"""Player stage: a sound device, or a WAV file clocked like one.

Both sinks pull fixed blocks from a ``PlayoutBuffer`` and stamp every block
with the time its first sample is heard (device output latency included).
Every block goes to the shared ``PlaybackClock`` (which response and sample is
audible when, and the signal itself as the echo canceller's reference); the
WAV sink also records the exact sample position of each chunk. The device
sink reopens its stream when the device errors or vanishes.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import wave
from typing import Any

import numpy as np
import ray

from actors.base import Stage, stage_actor
from pipeline.audio.convert import Resampler
from pipeline.flow.events import ReplyAudible, ReplyAudioStopped, ReplyDone, ReplyStopped, StageError
from pipeline.flow.events import DeviceReopened
from pipeline.flow.frames import (ChunkAudibleFrame, ControlFrame, EndOfTurnFrame, Frame, FrameError, HoldFrame,
                                  InterruptFrame, TTSAudioFrame)
from pipeline.audio.playback_clock import REF_RATE, PlaybackClock, segment_name
from pipeline.audio.playout import LOUD, PlayEvent, PlayoutBuffer, Segment
from pipeline.audio.stream_time import StreamClock, StreamTime


class WavSink:
    """Writes what would be heard, clocked in real time (or as fast as it comes)."""

    def __init__(self, path: str, rate: int, block: int, realtime: bool, buf: PlayoutBuffer, on_block) -> None:
        self.rate, self.block, self.realtime = rate, block, realtime
        self.buf, self.on_block = buf, on_block
        self.samples_written = 0
        self._wav = wave.open(path, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        self._started = False
        self._silence = 0  # samples of silence not yet written
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wav-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.block / self.rate
        next_t = time.monotonic()
        # blocks are stamped on their schedule, not by the wall time the thread woke at: a file has
        # no jitter of its own, and the echo canceller's reference cursor jumps (and counts the
        # canceller as converging again) whenever the stamps move by 2 ms, as a late wake-up did
        wall = time.time() - next_t
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
            # heard one block after it is handed over, as from a device's buffer: the
            # playback clock then knows a block ahead what is heard, as with a device
            t_block = wall + next_t + period if self.realtime else time.time()
            pcm, events = self.buf.read(self.block)
            self._started = self._started or any(e.kind == "response_start" for e in events)
            base = None
            if self._started:  # one continuous timeline from the first reply sample on
                base = self.samples_written + self._silence
                if pcm.any() or events:
                    self._wav.writeframes(np.zeros(self._silence, np.int16).tobytes() + pcm.tobytes())
                    self.samples_written += self._silence + len(pcm)
                    self._silence = 0
                else:  # written only if more sound follows: the file ends with the last reply
                    self._silence += len(pcm)
            self.on_block(pcm, events, t_block, base)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._wav.close()


class DeviceSink:
    """One long-lived sounddevice OutputStream (opening one per chunk costs ~200 ms).

    A watchdog reopens the stream when it errors or its callback stops coming
    (the device vanished); audio queued meanwhile waits in the buffer.
    """

    # no callback for this long on a started stream: the device is gone. ALSA's pulse plugin also
    # pauses callbacks for 0.5-0.6 s on underruns on a loaded 2-core machine (barge_in runs), which
    # this takes for an outage (1.5 s cut those reopens 18 -> 1 in a quick run but not the late first
    # sounds there); left at 0.5 s, the value every measurement so far was taken with
    STALL_S = 0.5

    def __init__(self, device: str, rate: int, block: int, buf: PlayoutBuffer, on_block, on_error,
                 latency_s: float = 0.0) -> None:
        self.device, self.buf, self.on_block, self.on_error = device, buf, on_block, on_error
        self.block, self.rate = block, rate
        # what is already in the device's buffer still plays after a pause: asked small (20 ms;
        # PulseAudio's "low" is 40 ms: 20 ms later silence on every barge-in, no xruns measured either way)
        self.latency_s = latency_s
        self.samples_written = 0
        self.status_errors = 0
        self.reopened = 0
        self.latency = 0.0
        self._last_cb = time.monotonic()
        self.stream_time = StreamTime()
        self._stop = threading.Event()
        self.stream = self._open()  # the first open fails loudly: a wrong device name is a config error
        threading.Thread(target=self._watch, name="player-watchdog", daemon=True).start()

    def _open(self):
        from pipeline.audio.devices import import_sounddevice

        sd = import_sounddevice()
        stream = sd.OutputStream(samplerate=self.rate, channels=1, dtype="int16", blocksize=self.block,
                                 device=self.device or None, latency=self.latency_s or "low", callback=self._callback)
        self.latency = float(stream.latency)
        # a new stream counts its samples anew; tuned on PulseAudio at 10 ms blocks (a 0.2 s time
        # constant, steps on 60 ms of stamps: the latency step at a reply's start is taken at once)
        self._stream_clock = StreamClock(self.rate, tau_s=0.2, step_s=0.06)
        self._last_cb = time.monotonic()
        stream.start()
        return stream

    def _callback(self, outdata, frames, time_info, status) -> None:
        self._last_cb = time.monotonic()
        if status:
            self.status_errors += 1
        pcm, events = self.buf.read(frames)
        outdata[:, 0] = pcm
        # when this block's first sample reaches the speaker, on the wall clock, smoothed (see StreamClock)
        clock = self._stream_clock
        pos = clock.samples / self.rate
        clock.update(self.stream_time.wall(time_info.outputBufferDacTime, time_info.currentTime), frames)
        self.on_block(pcm, events, clock.time_of(pos), self.samples_written)
        self.samples_written += frames

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            stream = self.stream
            gap = time.monotonic() - self._last_cb
            stalled = gap > self.STALL_S
            if stream is not None and stream.active and not stalled:
                continue
            why = f"no callback for {gap:.2f} s" if stalled else "stream stopped"
            self.on_error(f"speaker {self.device or 'default'!r} failed ({why}); reopening")
            self._close_stream()
            while not self._stop.is_set():
                try:
                    self.stream = self._open()
                    self.reopened += 1
                    self.on_error(None)  # recovered
                    break
                except Exception as e:
                    self.on_error(f"speaker {self.device or 'default'!r} unavailable ({e}); retrying in 1 s")
                    self._stop.wait(1.0)

    def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:
                pass

    def close(self) -> None:
        self._stop.set()
        self._close_stream()


class PlayerStage(Stage):
    name = "player"

    def setup(self) -> None:
        self.session_id = ""  # the one conversation whose audio this output plays
        self.buf = PlayoutBuffer(live=lambda rid: self.is_live(self.session_id, rid))
        self.sink: WavSink | DeviceSink | None = None
        self.clock: PlaybackClock | None = None
        self.rate = self.cfg.audio.output_rate
        self._resamplers: dict[int, Resampler] = {}
        self.chunks: list[dict[str, Any]] = []  # exact sample positions of each chunk heard
        self.last_loud: dict[int, float] = {}  # response -> wall time its last non-silent sample was heard
        self.device_errors = 0
        self._outage = False
        self._events: queue.Queue = queue.Queue()
        threading.Thread(target=self._event_loop, name="player-events", daemon=True).start()

    def _open_clock(self) -> None:
        """One clock for the actor's life (readers attach once); the rate follows each open."""
        if self.clock is None:
            name = segment_name(self.cfg.engine.run_id or str(os.getpid()), "player")
            self.clock = PlaybackClock.create(name, self.rate or 24000)
        self.clock.header[2] = self.rate
        self._ref = Resampler(self.rate, REF_RATE)

    def clock_name(self) -> str:
        return self.clock.shm.name if self.clock is not None else ""

    def open_wav(self, path: str, rate: int, realtime: bool, session_id: str) -> int:
        self.close()
        self.session_id = session_id
        self.rate = self.cfg.audio.output_rate or rate
        block = max(1, self.rate * self.cfg.audio.output_block_ms // 1000)
        self._open_clock()
        self.sink = WavSink(path, self.rate, block, realtime, self.buf, self._on_block)
        return self.rate

    def open_device(self, rate: int, session_id: str) -> int:
        self.close()
        self.session_id = session_id
        self.rate = self.cfg.audio.output_rate or rate
        a = self.cfg.audio
        block = max(1, self.rate * (a.output_latency_ms // 2 or a.output_block_ms) // 1000)
        self._open_clock()
        self.sink = DeviceSink(self.cfg.audio.output_device, self.rate, block, self.buf, self._on_block,
                               self._on_device_error, self.cfg.audio.output_latency_ms / 1000)
        return self.rate

    def close(self) -> dict:
        if self.sink is not None:
            self.sink.close()  # its thread has written its last block
            self.sink = None
        if self.clock is not None:
            self.clock.output_open = False  # no blocks from here on is no stall
        return {"chunks": self.chunks}

    def release(self) -> None:
        """Before the actor is killed: close the output and remove the shared clock."""
        self.close()
        if self.clock is not None:
            self.clock.close()
            self.clock = None

    def process(self, frame: Frame) -> None:
        if frame.session_id != self.session_id:
            raise FrameError(f"player plays {self.session_id!r}, not {frame.session_id!r}")
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
        if frame.session_id != self.session_id:
            return
        if isinstance(frame, HoldFrame):
            self.buf.hold(frame.response_id, frame.hold)
        stopped = set(frame.stopped) if isinstance(frame, InterruptFrame) else set()
        if changed:
            stopped |= set(self.buf.drop())
        t = time.time()
        for rid in sorted(stopped):
            # what was heard goes back with the stop, at once (the session waits on it for the
            # history); the last audible sample's time follows once the fade-out has played
            self.event(ReplyStopped(session_id=self.session_id, response_id=rid, t=t, heard=self.buf.heard(rid),
                                    chunks=self._chunks_of(rid), output_rate=self.rate))
            self._events.put(("reply_audio_stopped", rid, t, {}))

    def _chunks_of(self, rid: int) -> list[dict]:
        return [c for c in self.chunks if c["response_id"] == rid]

    @ray.method(concurrency_group="control")
    def heard(self, response_id: int) -> list[dict]:
        """Each chunk of a reply with the samples of it played so far (see pipeline.conversation.heard_text)."""
        return self.buf.heard(response_id)

    # The sink thread (or the audio callback) must not block on Ray: hand off.
    def _on_block(self, pcm: np.ndarray, events: list[PlayEvent], t_block: float, base: int | None) -> None:
        rid, pos = self.buf.block_start
        if self.clock is not None:
            self.clock.write(self._ref(pcm), t_block, rid, pos)
            self.clock.output_open = True
        loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > LOUD)
        if len(loud):
            who = rid or self.buf.now_playing[0]
            if who:
                self.last_loud[who] = t_block + (loud[-1] + 1) / self.rate
        for e in events:
            t = t_block + e.offset / self.rate
            if e.kind == "response_start":
                self._events.put(("first_reply_sample_out", e.response_id, t, {}))
            elif e.kind == "chunk_start" and e.segment is not None:
                self.chunks.append({"response_id": e.response_id, "chunk": e.segment.chunk_index,
                                    "text": e.segment.text, "text_start": e.segment.text_start,
                                    "text_end": e.segment.text_end,
                                    "sample_start": None if base is None else base + e.offset, "t_start": t})
                # the avatar's cue: this chunk's text (emotion tags included) is heard from t on
                self._events.put(("chunk_audible", e.response_id, t, {
                    "text": e.segment.text, "text_start": e.segment.text_start, "chunk_index": e.segment.chunk_index,
                    "duration": len(e.segment.pcm) / self.rate}))
            elif e.kind == "chunk_end" and e.segment is not None:
                for c in reversed(self.chunks):
                    if c["response_id"] == e.response_id and c["chunk"] == e.segment.chunk_index:
                        c["sample_end"] = None if base is None else base + e.offset
                        c["t_end"] = t
                        break
            elif e.kind == "response_done":
                self._events.put(("reply_done", e.response_id, t, {}))

    def _on_device_error(self, message: str | None) -> None:
        if message is None:
            self._outage = False
            self._events.put(("device_reopened", 0, time.time(), {}))
        elif not self._outage:  # one report per outage, not one per retry
            self._outage = True
            self.device_errors += 1
            self.log.warning("%s (playing %s, %d samples written)", message, self.buf.now_playing,
                             getattr(self.sink, "samples_written", -1))
            self._events.put(("error", 0, time.time(), {"message": message}))

    def _event_loop(self) -> None:
        """Off the sink's thread (which must never block on Ray): what was heard, to the session."""
        while True:
            name, rid, t, data = self._events.get()
            own = dict(session_id=self.session_id, response_id=rid, t=t)
            if name == "chunk_audible":  # to the avatar stage, where there is one
                self.emit(ChunkAudibleFrame(t_audible=t, **{k: v for k, v in own.items() if k != "t"}, **data))
            elif name == "first_reply_sample_out":
                self.event(ReplyAudible(**own))
            elif name == "reply_done":
                self.event(ReplyDone(heard=self.buf.heard(rid), chunks=self._chunks_of(rid), output_rate=self.rate,
                                     **own))
                self.last_loud.pop(rid, None)
            elif name == "reply_audio_stopped":
                time.sleep(0.1)  # the fade-out and the device's buffer are still to be heard
                if rid in self.last_loud:
                    self.event(ReplyAudioStopped(audio_stopped_t=self.last_loud.pop(rid), **own))
            elif name == "device_reopened":
                self.event(DeviceReopened(device="output", **own))
            elif name == "error":
                self.event(StageError(stage=self.name, message=data["message"], **own))

    def extra_stats(self) -> dict:
        sink = self.sink
        return {"samples_written": getattr(sink, "samples_written", 0), "rate": self.rate,
                "device_errors": self.device_errors, "reopened": getattr(sink, "reopened", 0),
                "output_latency_s": getattr(sink, "latency", 0.0),
                "callback_late_ms": sink.stream_time.callback_late_ms() if isinstance(sink, DeviceSink) else {},
                "clock_steps": sink._stream_clock.steps if isinstance(sink, DeviceSink) else 0, "clock": self.clock_name()}

    @ray.method(concurrency_group="control")
    def playback_position(self) -> tuple[int, int, bool]:
        """(response_id, sample within it, audible) at this moment, from the playback clock."""
        return self.clock.position() if self.clock is not None else (0, 0, False)


PlayerActor = stage_actor(PlayerStage)
