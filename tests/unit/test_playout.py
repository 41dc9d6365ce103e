"""PlayoutBuffer: blocks pulled by a sink, with events at exact sample offsets."""
from __future__ import annotations

import numpy as np

from pipeline.audio.playout import PlayoutBuffer, Segment


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int16)


def ev(events) -> list[tuple[str, int, int]]:
    return [(e.kind, e.response_id, e.offset) for e in events]


def test_empty_buffer_reads_silence_without_events():
    buf = PlayoutBuffer()
    pcm, events = buf.read(64)
    assert pcm.dtype == np.int16 and len(pcm) == 64 and not pcm.any()
    assert events == []
    assert not buf.pending()
    assert buf.wait(timeout=0) is False


def test_events_carry_sample_offsets():
    buf = PlayoutBuffer()
    buf.add(Segment(1, ramp(1, 100), text="Hello,", text_start=0, text_end=6, chunk_index=0))
    buf.add(Segment(1, ramp(1001, 50), text="world.", text_start=7, text_end=13, chunk_index=1))
    buf.end(1)
    assert buf.pending() and buf.wait(timeout=0)

    pcm, events = buf.read(80)
    assert np.array_equal(pcm, ramp(1, 80))
    assert ev(events) == [("response_start", 1, 0), ("chunk_start", 1, 0)]
    assert events[1].segment.text == "Hello,"
    assert buf.played(1) == 80
    assert buf.now_playing == (1, 80)

    pcm, events = buf.read(80)
    assert np.array_equal(pcm[:20], ramp(81, 20))  # rest of chunk 0
    assert np.array_equal(pcm[20:70], ramp(1001, 50))  # all of chunk 1
    assert not pcm[70:].any()  # then silence
    assert ev(events) == [("chunk_end", 1, 20), ("chunk_start", 1, 20), ("chunk_end", 1, 70),
                          ("response_done", 1, 70)]
    assert [e.segment.chunk_index for e in events[:3]] == [0, 1, 1]
    assert (events[2].segment.text_start, events[2].segment.text_end) == (7, 13)
    assert buf.now_playing == (1, 150)
    assert not buf.pending()


def test_chunk_ending_exactly_on_a_block_boundary():
    buf = PlayoutBuffer()
    buf.add(Segment(3, ramp(1, 64)))
    buf.end(3)
    _, events = buf.read(64)
    assert ev(events) == [("response_start", 3, 0), ("chunk_start", 3, 0), ("chunk_end", 3, 64)]
    pcm, events = buf.read(64)
    # the end marker is only reached in the next block, at its first sample
    assert ev(events) == [("response_done", 3, 0)]
    assert not pcm.any()


def test_played_counts_samples_per_response():
    buf = PlayoutBuffer()
    buf.add(Segment(1, ramp(1, 30)))
    buf.add(Segment(2, ramp(1, 100)))
    buf.read(20)
    assert (buf.played(1), buf.played(2)) == (20, 0)
    _, events = buf.read(20)
    assert (buf.played(1), buf.played(2)) == (30, 10)
    assert ev(events) == [("chunk_end", 1, 10), ("response_start", 2, 10), ("chunk_start", 2, 10)]
    assert buf.played(99) == 0


def test_drop_stops_the_audio_on_the_next_read():
    buf = PlayoutBuffer()
    buf.add(Segment(1, ramp(1, 1000)))
    buf.add(Segment(1, ramp(1, 1000), chunk_index=1))
    buf.end(1)
    pcm, _ = buf.read(100)
    assert pcm.all()  # reply 1 is playing
    assert buf.drop(lambda rid: rid >= 2) == [1]
    pcm, events = buf.read(200)
    F = PlayoutBuffer.FADE
    assert pcm[0] == 101 and abs(int(pcm[F - 1])) <= 1  # 5 ms fade from where it was (no click)
    assert np.all(np.diff(pcm[:F].astype(int)) <= 0)
    assert not pcm[F:].any()  # then silence, within the same block
    assert events == []  # and no chunk_end/response_done for the dropped reply
    assert not buf.pending()
    assert buf.played(1) == 0


def test_drop_keeps_live_responses():
    buf = PlayoutBuffer()
    buf.add(Segment(1, ramp(1, 500)))
    buf.add(Segment(2, ramp(2001, 40)))
    buf.end(2)
    buf.read(100)
    assert buf.drop(lambda rid: rid >= 2) == [1]
    pcm, events = buf.read(200)
    F = PlayoutBuffer.FADE
    assert np.array_equal(pcm[F:F + 40], ramp(2001, 40))  # reply 2 starts right after the fade-out
    assert not pcm[F + 40:].any()
    assert ev(events) == [("response_start", 2, F), ("chunk_start", 2, F), ("chunk_end", 2, F + 40),
                          ("response_done", 2, F + 40)]


def test_hold_pauses_mid_segment_with_a_fade_and_resumes_after_it():
    buf = PlayoutBuffer()
    buf.add(Segment(1, np.full(1000, 1000, np.int16), text="Hello there.", text_end=12))
    buf.end(1)
    buf.read(100)
    buf.hold(1, True)
    F = PlayoutBuffer.FADE
    pcm, events = buf.read(200)
    assert pcm[0] == 1000 and abs(int(pcm[F - 1])) < 10 and not pcm[F:].any()
    assert buf.played(1) == 100 + F  # the fade was heard
    pcm, _ = buf.read(200)
    assert not pcm.any()  # paused
    buf.hold(1, False)
    pcm, _ = buf.read(200)
    assert pcm.all() and buf.played(1) == 300 + F
    [h] = buf.heard(1)
    assert (h["played"], h["samples"], h["text"]) == (300 + F, 1000, "Hello there.")
    assert (h["speech_start"], h["speech_end"]) == (0, 1000)


def test_heard_is_kept_after_a_response_is_dropped_or_done():
    buf = PlayoutBuffer()
    buf.add(Segment(1, ramp(1, 500), text="a"))
    buf.add(Segment(1, ramp(1, 500), text="b", chunk_index=1))
    buf.read(600)
    buf.drop(lambda rid: rid >= 2)
    assert [(h["text"], h["played"]) for h in buf.heard(1)] == [("a", 500), ("b", 100)]
    assert buf.heard(7) == []


def test_drop_of_nothing_live_changes_nothing():
    buf = PlayoutBuffer()
    buf.add(Segment(5, ramp(1, 10)))
    assert buf.drop(lambda rid: True) == []
    pcm, _ = buf.read(10)
    assert np.array_equal(pcm, ramp(1, 10))


def test_cancel_style_drop_of_a_single_response():
    buf = PlayoutBuffer()
    for rid in (1, 2, 3):
        buf.add(Segment(rid, np.full(10, rid, np.int16)))
    assert buf.drop(lambda rid: rid != 2) == [2]
    pcm, events = buf.read(30)
    assert list(pcm[:20]) == [1] * 10 + [3] * 10
    assert [e.response_id for e in events if e.kind == "response_start"] == [1, 3]


def test_wav_sink_stamps_blocks_on_their_schedule_not_when_its_thread_woke(tmp_path):
    # a late wake-up must not move the stamps: the echo canceller's reference cursor jumps when
    # they move by 2 ms, and counts the canceller as converging again each time
    import time

    from actors.player import WavSink

    stamps = []
    buf = PlayoutBuffer()
    sink = WavSink(str(tmp_path / "out.wav"), 24000, 240, True, buf,
                   lambda pcm, events, t, base: (stamps.append(t), time.sleep(0.004 * (len(stamps) % 3))))
    time.sleep(0.4)
    sink.close()
    steps = np.diff(stamps)
    assert len(steps) > 10
    np.testing.assert_allclose(steps, 0.01, atol=1e-6)
