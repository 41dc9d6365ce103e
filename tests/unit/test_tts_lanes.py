"""Which synthesis lane takes which chunk (actors/tts.py ``TTSStage._next``), on the queues alone."""
from __future__ import annotations

from types import SimpleNamespace

from actors.tts import TTSStage, _Reply
from pipeline.conversation.text_chunker import Chunk


def _queues(*replies: tuple[str, int, int], in_flight: set[tuple[str, int]]):
    """A stand-in for the stage's queues: each reply (session, response, index of its next chunk)."""
    rs = {}
    for sid, rid, index in replies:
        r = _Reply(sid, rid, priority=1)
        r.todo.append(Chunk("Hello there,", 0, 12, index))
        rs[(sid, rid)] = r
    return SimpleNamespace(_replies=rs, _in_flight=set(in_flight))


def test_the_first_chunk_lane_runs_only_beside_another_conversation():
    # b's first chunk while a's later chunk is being made: the lane takes it
    q = _queues(("b", 1, 0), in_flight={("a", 3)})
    item = TTSStage._next(q, first_only=True)
    assert item is not None and (item[0].session_id, item[1].index) == ("b", 0)
    # the same conversation's other reply in flight: not beside it (it slowed the first sound 1-1.5 s)
    q = _queues(("a", 4, 0), in_flight={("a", 3)})
    assert TTSStage._next(q, first_only=True) is None
    # nothing in flight: the main lane takes it, not the first-chunk lane
    q = _queues(("a", 4, 0), in_flight=set())
    assert TTSStage._next(q, first_only=True) is None
    assert TTSStage._next(q, first_only=False)[0].response_id == 4
    # a later chunk is never the first-chunk lane's
    q = _queues(("b", 1, 2), in_flight={("a", 3)})
    assert TTSStage._next(q, first_only=True) is None
