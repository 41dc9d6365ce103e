"""TTS service: Kokoro-82M (kokoro-onnx) on clause/sentence chunks of the streams.

One shared model serves every conversation pinned to this pool member. Each reply's
text is cut into chunks as it streams (a ``TextChunker`` per reply); the chunks wait in
the reply's own queue and a synthesis lane takes the next: a reply's first chunk
goes before anyone's later chunks (first audio is what a listener waits on; later
chunks have the audio already queued to hide behind), otherwise the oldest. So the
first clause is synthesized while the LLM is still streaming the rest, and a
conversation never waits behind another's whole reply. Each audio frame carries the
text range it speaks, so the output can tell which words were actually heard.

Two lanes share the one model (``tts.first_chunk_lane``): the main lane takes any
work, the second only replies' first chunks while another conversation's chunk is being made,
so a first clause never waits behind another conversation's long later one; it runs beside it
instead. (Taking any first chunk, it also ran one beside its own conversation's other reply, and
one conversation's first sound came 1-1.5 s later: barge_in.py, session of 2026-12-07.) Measured on the
2-core machine (benchmarks/tts_lanes.py; Kokoro, 2 threads, RTF 0.53 alone): "Sure,"
arriving 0.3 s into a 5.5 s sentence was ready 1.17 s later (3.10 s later behind it),
the sentence 0.79 s later than alone; two at once took 0.467 s per second of audio
against 0.50 in a row. A reply has one chunk in flight at a time, so its audio stays
in order, and one conversation alone runs as with one lane.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from actors.base import Stage, stage_actor
from models.runtime import InferenceThread
from pipeline.audio.convert import to_int16
from pipeline.conversation.synthesis_pace import ReplyPace, SynthesisCost
from pipeline.conversation.text_chunker import Chunk, TextChunker
from pipeline.flow.events import TTSFirstAudio
from pipeline.flow.frames import ControlFrame, EndOfTurnFrame, Frame, FrameError, LLMTokenFrame, TTSAudioFrame


@dataclass
class _Reply:
    session_id: str
    response_id: int
    priority: int
    since: float = field(default_factory=time.monotonic)
    chunker: TextChunker | None = None
    todo: deque = field(default_factory=deque)  # Chunk, or the EndOfTurnFrame after the last one
    spoken: int = 0  # chunks synthesized
    pace: ReplyPace = field(default_factory=ReplyPace)  # its audio sent: how much is still ahead
    cut: tuple[float, int] = (0.0, 0)  # its last paced cut: (audio ahead then, budget in chars)


class TTSStage(Stage):
    name = "tts"

    def setup(self) -> None:
        from models.registry import load_kokoro

        # the model is loaded on the first lane's niced thread: onnxruntime's pool threads inherit it
        self.lanes = [InferenceThread("tts", self.cfg.tts.nice)]
        if self.cfg.tts.first_chunk_lane:
            self.lanes.append(InferenceThread("tts-first", self.cfg.tts.nice))
        self.worker = self.lanes[0]
        self.tts = self.worker.call(load_kokoro, self.cfg)
        self.sample_rate = 24000
        self.cost = SynthesisCost()
        # warm-up (the first run allocates), and two lengths for the cost's fixed part and rate
        self.worker.call(self._synth, "Hello.", self.cfg.tts.voice)
        for text in ("Sure.", "The quick brown fox jumps over the lazy dog, and then it runs away."):
            t0 = time.monotonic()
            pcm = self.worker.call(self._synth, text, self.cfg.tts.voice)
            self.cost.observe(time.monotonic() - t0, len(pcm) / self.sample_rate, len(text))
        self._replies: dict[tuple[str, int], _Reply] = {}
        self._in_flight: set[tuple[str, int]] = set()  # replies with a chunk being synthesized
        self._work = threading.Condition()
        self._deferred = False  # a paced reply's text waits for a better cut (the lanes look again soon)
        self.synth_s = 0.0
        self.audio_s = 0.0
        self.first_lane_chunks = 0
        self.recent = deque(maxlen=30)  # the last chunks made: what the pacing decided, and what it cost
        for i, lane in enumerate(self.lanes):
            threading.Thread(target=self._run, args=(lane, i > 0), name=f"tts-lane{i}", daemon=True).start()

    def voices(self) -> list[str]:
        return sorted(self.tts.get_voices())

    def extra_stats(self) -> dict:
        with self._work:
            queued = sum(len(r.todo) for r in self._replies.values())
        return {"rtf": self.synth_s / self.audio_s if self.audio_s else None, "aborted": self.tts.sess.aborted,
                "thread_nice": self.worker.thread_nice(), "queued_chunks": queued, "lanes": len(self.lanes),
                "first_lane_chunks": self.first_lane_chunks, "paced": self.cfg.tts.paced_chunks,
                "cost": {"fixed_s": round(self.cost.fixed_s, 3), "rate": round(self.cost.rate, 3),
                         "s_per_char": round(self.cost.s_per_char, 4), "first_min_chars": self.cost.first_min_chars(),
                         "floor_s": round(self.cost.floor_s(), 3)}, "recent_chunks": list(self.recent)}

    def _synth(self, text: str, voice: str, tag: tuple[str, int] | None = None) -> np.ndarray:
        """On a lane's thread: ``tag`` labels the run for ``abort_if`` (per thread)."""
        c = self.cfg.tts
        self.tts.sess.tag = tag
        audio, rate = self.tts.create(text, voice=voice, speed=c.speed, lang=c.lang)
        self.sample_rate = rate
        return to_int16(np.asarray(audio, dtype=np.float32).ravel())

    # ------------------------------------------------------------ the data lane: text in
    def _reply(self, frame: Frame) -> _Reply:
        key = (frame.session_id, frame.response_id)
        r = self._replies.get(key)
        if r is None:
            t = self.cfg.tts
            r = self._replies[key] = _Reply(frame.session_id, frame.response_id, int(frame.priority))
            first_min = max(t.first_chunk_min_chars, self.cost.first_min_chars()) if t.paced_chunks else \
                t.first_chunk_min_chars
            r.chunker = TextChunker(first_min, t.chunk_min_chars,
                                    first_max_words=t.first_chunk_max_words, paced=t.paced_chunks)
        return r

    def process(self, frame: Frame) -> None:
        with self._work:
            r = self._reply(frame)
            if isinstance(frame, LLMTokenFrame):
                r.todo.extend(r.chunker.add(frame.text))
            elif isinstance(frame, EndOfTurnFrame):
                r.todo.extend(r.chunker.flush())
                r.todo.append(frame)
            else:
                raise FrameError(f"tts does not take {frame.kind}")
            self._work.notify_all()

    # ------------------------------------------------------------ the synthesis lanes
    @staticmethod
    def _paced_pending(r: _Reply) -> bool:
        """A paced reply past its first chunk with text still in its chunker."""
        c = r.chunker
        return c is not None and c.paced and c.started and bool(c.pending.strip())

    def _paced_cut(self, r: _Reply, now: float) -> int | None:
        """Where a reply's next later chunk ends, or None (no paced text, or it waits for a better cut)."""
        if not self._paced_pending(r):
            return None
        c = r.chunker
        ahead = r.pace.ahead_s(now)
        budget = self.cost.budget_chars(ahead)
        end = c.next_cut(budget, urgent=r.pace.urgent(self.cost, len(c.pending.strip()), now))
        if end is not None:
            r.cut = (ahead, budget)
        return end

    def _next(self, first_only: bool) -> tuple[_Reply, Chunk | EndOfTurnFrame] | None:
        """The most urgent piece of work: a reply's first chunk before later ones, else the oldest
        (``first_only``: first chunks only). Never a reply that has a chunk in flight. A paced
        reply's later chunk is cut now, as long as its audio ahead allows; its end waits for it."""
        now = time.monotonic()
        cuts: dict[tuple[str, int], int] = {}
        self._deferred = False
        for key, r in self._replies.items():
            if key in self._in_flight or first_only or (r.todo and isinstance(r.todo[0], Chunk)):
                continue
            end = self._paced_cut(r, now)
            if end is not None:
                cuts[key] = end
            elif self._paced_pending(r):
                self._deferred = True  # text waits for a better cut: look again soon
        ready = [r for key, r in self._replies.items() if key not in self._in_flight and (
            key in cuts or (r.todo and not (isinstance(r.todo[0], EndOfTurnFrame) and r.chunker is not None
                                              and r.chunker.pending.strip())))]
        if first_only:
            # only beside another conversation's chunk: beside one of its own (a superseded or
            # interrupted reply's) it slowed that conversation's first sound by 1-1.5 s at p50
            # (barge_in.py, one conversation: 8.66 s with the lane free, 7.16 s with none)
            busy = {sid for sid, _ in self._in_flight}
            ready = [r for r in ready if isinstance(r.todo[0], Chunk) and r.todo[0].index == 0
                     and busy - {r.session_id}]
        if not ready:
            return None
        def later(r: _Reply) -> bool:
            return (r.session_id, r.response_id) in cuts or (r.spoken > 0 and isinstance(r.todo[0], Chunk))
        r = min(ready, key=lambda r: (later(r), r.since))
        key = (r.session_id, r.response_id)
        self._in_flight.add(key)
        if key in cuts and not (r.todo and isinstance(r.todo[0], Chunk)):
            return r, r.chunker.take(cuts[key])
        return r, r.todo.popleft()

    def _run(self, lane: InferenceThread, first_only: bool) -> None:
        while True:
            with self._work:
                item = self._next(first_only)
                while item is None:
                    # a paced reply whose text waits for a better cut becomes urgent as its audio plays
                    self._work.wait(0.05 if self._deferred else None)
                    item = self._next(first_only)
            r, piece = item
            key = (r.session_id, r.response_id)
            try:
                if isinstance(piece, EndOfTurnFrame):
                    with self._work:
                        self._replies.pop(key, None)
                    if self.is_live(r.session_id, r.response_id):
                        self.emit(piece)
                else:
                    self.first_lane_chunks += first_only
                    self._speak(r, piece, lane)
            except Exception as e:  # one bad chunk must not stop the synthesis of everyone
                self.report_error(f"tts failed on {piece!r}: {e}", r.session_id, r.response_id)
            finally:
                with self._work:
                    self._in_flight.discard(key)
                    self._work.notify_all()  # its next chunk (or its end) may go now, on any lane

    def _speak(self, r: _Reply, chunk: Chunk, lane: InferenceThread) -> None:
        sid, rid = r.session_id, r.response_id
        text = chunk.speech
        if not text or not self.is_live(sid, rid):
            return
        spec = self.conversations.get(sid)
        voice = (spec.voice if spec is not None else "") or self.cfg.tts.voice
        t0 = time.time()
        try:
            pcm = lane.call(self._synth, text, voice, (sid, rid))
        except Exception:
            if not self.is_live(sid, rid):
                return  # aborted by an interrupt/cancel
            raise
        took = time.time() - t0
        self.synth_s += took
        self.audio_s += len(pcm) / self.sample_rate
        self.cost.observe(took, len(pcm) / self.sample_rate, len(text))
        self.recent.append({"chunk": chunk.index, "chars": len(text), "ahead_s": round(r.cut[0], 3),
                            "budget_chars": r.cut[1], "synth_s": round(took, 3),
                            "audio_s": round(len(pcm) / self.sample_rate, 3)})
        r.spoken += 1
        if not self.is_live(sid, rid) or len(pcm) == 0:
            return
        r.pace.sent(len(pcm) / self.sample_rate)
        if r.spoken == 1:
            self.event(TTSFirstAudio(session_id=sid, response_id=rid, synth_s=took, chars=len(text), t_start=t0))
        self.emit(TTSAudioFrame(pcm=pcm, sample_rate=self.sample_rate, session_id=sid, response_id=rid,
                                priority=r.priority, text=chunk.text, text_start=chunk.start, text_end=chunk.end,
                                chunk_index=chunk.index))

    # ------------------------------------------------------------ the control lane
    def on_control(self, frame: ControlFrame, changed: bool) -> None:
        if changed:
            self._drop(lambda sid, rid: not self.is_live(sid, rid))

    def on_close(self, session_id: str) -> None:
        self._drop(lambda sid, rid: sid == session_id)

    def _drop(self, dead) -> None:
        """Forget the queued work of dead replies, and stop the clause in flight if nobody will hear it."""
        with self._work:
            for key in [k for k in self._replies if dead(*k)]:
                del self._replies[key]
        self.tts.sess.abort_if(lambda tag: tag is not None and dead(*tag))


TTSActor = stage_actor(TTSStage)
