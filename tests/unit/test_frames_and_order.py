"""Frame validation, and receive-side ordering (OrderedInbox, SeqCounter)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.flow.frames import (AudioFrame, CancelFrame, EndOfTurnFrame, FrameError, InputAudioFrame,
                             InterruptFrame, LLMTokenFrame, PriorityChangeFrame, SentenceFrame, TranscriptFrame,
                             TTSAudioFrame, UserPausedFrame, UserStartedSpeakingFrame, UserStoppedSpeakingFrame)
from pipeline.flow.events import LLMDone, ReplyStopped, SpeechStarted
from pipeline.flow.ordering import OrderedInbox, SeqCounter


# ------------------------------------------------------------------ frames
def pcm(n: int = 160) -> np.ndarray:
    return np.zeros(n, np.int16)


@pytest.mark.parametrize("cls", [AudioFrame, InputAudioFrame, TTSAudioFrame])
def test_audio_frame_accepts_1d_int16(cls):
    f = cls(pcm=pcm(1600), sample_rate=16000)
    assert f.duration == pytest.approx(0.1)
    assert f.kind == cls.__name__


@pytest.mark.parametrize("cls", [AudioFrame, InputAudioFrame, TTSAudioFrame])
@pytest.mark.parametrize("bad", [
    np.zeros(160, np.float32),
    np.zeros(160, np.int32),
    np.zeros((160, 1), np.int16),  # 2-D (channels axis)
    np.zeros((2, 80), np.int16),
    [0] * 160,  # not an ndarray at all
])
def test_audio_frame_rejects_bad_pcm(cls, bad):
    with pytest.raises(FrameError, match="1-D int16"):
        cls(pcm=bad, sample_rate=16000)


@pytest.mark.parametrize("rate", [0, -16000])
def test_audio_frame_rejects_bad_rate(rate):
    with pytest.raises(FrameError, match="sample_rate"):
        InputAudioFrame(pcm=pcm(), sample_rate=rate)


def test_frame_error_is_a_value_error():
    assert issubclass(FrameError, ValueError)


def test_replace_revalidates_audio_frames():
    # Stage.emit re-creates frames with dataclasses.replace: validation must still run
    f = InputAudioFrame(pcm=pcm(), sample_rate=16000)
    g = dataclasses.replace(f, seq=7, source="mic")
    assert (g.seq, g.source) == (7, "mic")
    with pytest.raises(FrameError):
        dataclasses.replace(f, pcm=np.zeros(160, np.float64))


def test_frame_families():
    input_side = [InputAudioFrame(pcm=pcm(), sample_rate=16000), TranscriptFrame(text="hi"),
                  UserStartedSpeakingFrame(), UserPausedFrame(), UserStoppedSpeakingFrame(),
                  SpeechStarted(), LLMDone(), ReplyStopped()]  # events are records of what happened: never stale
    reply_side = [TTSAudioFrame(pcm=pcm(), sample_rate=24000), LLMTokenFrame(text="x"), SentenceFrame(text="x"),
                  EndOfTurnFrame(), InterruptFrame(), CancelFrame(), PriorityChangeFrame()]
    assert all(f.input_side for f in input_side)
    assert not any(f.input_side for f in reply_side)
    assert {f.kind for f in reply_side + input_side if f.urgent} == {"InterruptFrame", "CancelFrame",
                                                                      "PriorityChangeFrame"}


# ------------------------------------------------------------------ OrderedInbox
def tok(seq: int, source: str = "llm", text: str | None = None) -> LLMTokenFrame:
    return LLMTokenFrame(text=text if text is not None else f"t{seq}", seq=seq, source=source)


def seqs(frames) -> list[int]:
    return [f.seq for f in frames]


def test_in_order_frames_pass_straight_through():
    inbox = OrderedInbox()
    for i in range(1, 6):
        assert seqs(inbox.accept(tok(i), now=0.0)) == [i]
    assert inbox.held() == 0


def test_out_of_order_frames_are_released_in_sequence():
    inbox = OrderedInbox(gap_timeout=10.0)
    released = []
    for s in [3, 1, 2, 6, 4, 5]:
        released.append(seqs(inbox.accept(tok(s), now=0.0)))
    # 3 waits for 1 and 2; 6 waits for 4 and 5
    assert released == [[], [1], [2, 3], [], [4], [5, 6]]
    assert inbox.held() == 0
    assert inbox.skipped == 0


def test_shuffled_stream_comes_out_in_order():
    import random

    order = list(range(1, 101))
    random.Random(7).shuffle(order)
    inbox = OrderedInbox(gap_timeout=10.0)
    out = []
    for s in order:
        out += inbox.accept(tok(s), now=0.0)
    assert seqs(out) == list(range(1, 101))
    assert [f.text for f in out] == [f"t{i}" for i in range(1, 101)]


def test_independent_sources_do_not_block_each_other():
    inbox = OrderedInbox(gap_timeout=10.0)
    assert inbox.accept(tok(2, "vad"), now=0.0) == []  # vad #1 is missing
    # the stt channel is not held up by vad's gap
    assert seqs(inbox.accept(tok(1, "stt"), now=0.0)) == [1]
    assert seqs(inbox.accept(tok(2, "stt"), now=0.0)) == [2]
    assert inbox.held() == 1
    out = inbox.accept(tok(1, "vad"), now=0.0)
    assert [(f.source, f.seq) for f in out] == [("vad", 1), ("vad", 2)]
    assert inbox.held() == 0


def test_duplicates_are_dropped_and_counted():
    inbox = OrderedInbox(gap_timeout=10.0)
    assert seqs(inbox.accept(tok(1), now=0.0)) == [1]
    assert inbox.accept(tok(1, text="again"), now=0.0) == []  # already released
    assert inbox.accept(tok(3), now=0.0) == []
    assert inbox.accept(tok(3, text="again"), now=0.0) == []  # already held
    assert inbox.duplicates == 2
    out = inbox.accept(tok(2), now=0.0)
    assert seqs(out) == [2, 3]
    assert out[1].text == "t3"  # the first copy is the one kept


def test_gap_is_held_before_timeout_and_skipped_after():
    inbox = OrderedInbox(gap_timeout=0.25)
    assert seqs(inbox.accept(tok(1), now=100.0)) == [1]
    assert inbox.accept(tok(3), now=100.0) == []  # gap at 2 opens now
    assert inbox.accept(tok(4), now=100.2) == []  # 0.2 s: still waiting for 2
    assert inbox.skipped == 0
    out = inbox.accept(tok(5), now=100.25)  # gap open for gap_timeout: give up on 2
    assert seqs(out) == [3, 4, 5]
    assert inbox.skipped == 1
    assert inbox.held() == 0
    # the straggler arrives after it was given up on: dropped, not delivered out of order
    assert inbox.accept(tok(2), now=100.3) == []
    assert inbox.duplicates == 1
    assert seqs(inbox.accept(tok(6), now=100.3)) == [6]


def test_skip_jumps_only_to_the_oldest_held_frame():
    inbox = OrderedInbox(gap_timeout=0.25)
    assert inbox.accept(tok(3), now=0.0) == []  # 1 and 2 missing
    assert inbox.accept(tok(6), now=0.1) == []  # 4 and 5 missing too
    out = inbox.accept(tok(8), now=0.3)
    # 1-2 are skipped (3 released); 4-5 form a new gap whose clock restarts
    assert seqs(out) == [3]
    assert inbox.skipped == 2
    assert inbox.held() == 2
    assert seqs(inbox.accept(tok(4), now=0.4)) == [4]
    assert seqs(inbox.accept(tok(5), now=0.4)) == [5, 6]
    assert inbox.skipped == 2
    out = inbox.accept(tok(9), now=0.56)  # the gap at 7 (open since 0.3) has now timed out
    assert seqs(out) == [8, 9]
    assert inbox.skipped == 3


def test_gap_clock_resets_once_the_gap_closes():
    inbox = OrderedInbox(gap_timeout=0.25)
    inbox.accept(tok(2), now=0.0)
    assert seqs(inbox.accept(tok(1), now=0.1)) == [1, 2]
    # a new gap much later must get its full timeout, not inherit the old clock
    assert inbox.accept(tok(4), now=10.0) == []
    assert inbox.accept(tok(5), now=10.1) == []
    assert inbox.skipped == 0
    assert seqs(inbox.accept(tok(3), now=10.2)) == [3, 4, 5]


@pytest.mark.parametrize("seq", [0, -1])
def test_unnumbered_frames_pass_straight_through(seq):
    inbox = OrderedInbox(gap_timeout=10.0)
    inbox.accept(tok(2), now=0.0)  # a gap on the same source...
    f = tok(seq)
    assert inbox.accept(f, now=0.0) == [f]  # ...does not hold an unnumbered frame
    assert inbox.accept(tok(seq), now=0.0) != []  # and unnumbered frames are never "duplicates"
    assert inbox.duplicates == 0
    assert inbox.held() == 1


def test_seq_counter_numbers_each_destination_from_one():
    c = SeqCounter()
    assert [c.next("tts") for _ in range(3)] == [1, 2, 3]
    assert [c.next("session") for _ in range(2)] == [1, 2]
    assert c.next("tts") == 4


def test_seq_counter_is_thread_safe():
    import threading

    c = SeqCounter()
    got: list[int] = []
    lock = threading.Lock()

    def work():
        mine = [c.next("x") for _ in range(500)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 2001))
