"""Real Ray actors built from fake stages: two lanes, stale dropping, ordering.

Timing is only used to *wait* for work; the assertions are about order: the
control call ran while the data lane was still busy, stale frames were never
started, frames came out in sequence.
"""
from __future__ import annotations

import random

import pytest

from pipeline.flow.events import StageError
from pipeline.flow.frames import CancelFrame, InterruptFrame, SentenceFrame
from pipeline.flow.routes import ConversationSpec
from tests.unit.fake_stages import FailingActor, RecorderActor, SenderActor, SlowActor
from tests.unit.helpers import wait_until

DELAY = 0.3  # per frame in the slow stage
ACK_S = 10.0  # a control call's answer: it must come while the data lane is busy, however slow the machine


@pytest.fixture
def actors(ray_cluster, test_config):
    """Make actors for one test (each knowing the "default" conversation) and kill them afterwards."""
    made = []

    def make(cls, *args, **kw):
        a = cls.remote(test_config, *args, **kw)
        ray_cluster.get(a.open_conversation.remote(ConversationSpec("default")), timeout=60)
        made.append(a)
        return a

    yield make
    for a in made:
        ray_cluster.kill(a)


def sentence(i: int, rid: int, seq: int | None = None, source: str = "driver", text: str | None = None):
    return SentenceFrame(text=text if text is not None else f"s{i}.", index=i, response_id=rid,
                         seq=i if seq is None else seq, source=source)


def start_busy(ray, slow, n: int = 5, rid: int = 1):
    """Queue ``n`` slow frames of ``rid`` and wait until the first is in process()."""
    for i in range(1, n + 1):
        slow.push.remote(sentence(i, rid))
    wait_until(lambda: ray.get(slow.log.remote())["started"])


def test_ready_runs_setup_and_reports(ray_cluster, actors):
    rec = actors(RecorderActor)
    info = ray_cluster.get(rec.ready.remote(), timeout=60)
    assert info["stage"] == "recorder"
    assert isinstance(info["pid"], int)
    assert ray_cluster.get(rec.count.remote()) == 0


def test_control_lane_overtakes_busy_data_lane(ray_cluster, actors):
    ray = ray_cluster
    slow = actors(SlowActor, 2 * DELAY)
    ray.get(slow.ready.remote(), timeout=60)
    start_busy(ray, slow, n=5)

    # 5 x 0.6 s of data are queued; the control call must not wait behind them
    t_ack = ray.get(slow.control.remote(InterruptFrame(response_id=2)), timeout=ACK_S)

    log = wait_until(lambda: (lg := ray.get(slow.log.remote()))["finished"] and lg)
    first = log["finished"][0]
    # the interrupt was applied while process() was still busy with the first frame
    assert first["start"] <= t_ack < first["end"]
    [ctl] = log["controls"]
    assert (ctl["kind"], ctl["rid"], ctl["changed"]) == ("InterruptFrame", 2, True)


def test_interrupt_drops_queued_stale_frames_and_keeps_new_ones(ray_cluster, actors):
    ray = ray_cluster
    slow = actors(SlowActor, DELAY)
    ray.get(slow.ready.remote(), timeout=60)
    start_busy(ray, slow, n=5, rid=1)
    t_ack = ray.get(slow.control.remote(InterruptFrame(response_id=2)), timeout=ACK_S)
    for i in (6, 7):
        slow.push.remote(sentence(i, rid=2))

    log = wait_until(lambda: (lg := ray.get(slow.log.remote()))
                     and sum(r["rid"] == 2 for r in lg["finished"]) == 2 and lg)
    old = [r for r in log["started"] if r["rid"] == 1]
    new = [r for r in log["finished"] if r["rid"] == 2]
    # only the frame(s) already in process() when the interrupt landed ran; the rest were dropped
    assert 1 <= len(old) < 5
    assert [r["index"] for r in old] == list(range(1, len(old) + 1))
    assert all(r["start"] <= t_ack for r in old)
    # the new response's frames all ran, in order, after the interrupt
    assert [r["index"] for r in new] == [6, 7]
    assert all(r["start"] > t_ack for r in new)
    stats = ray.get(slow.stats.remote())
    assert stats["dropped_stale"] == 5 - len(old)
    assert stats["processed"] == len(old) + 2
    assert stats["held"] == 0


def test_cancel_on_the_control_lane_kills_only_that_response(ray_cluster, actors):
    ray = ray_cluster
    rec = actors(RecorderActor)
    ray.get(rec.ready.remote(), timeout=60)
    ray.get(rec.control.remote(CancelFrame(response_id=2)), timeout=10)
    for i, rid in enumerate([1, 2, 3, 2, 1], start=1):
        rec.push.remote(sentence(i, rid))
    wait_until(lambda: ray.get(rec.count.remote()) == 3)
    got = ray.get(rec.received.remote())
    assert [(f.index, f.response_id) for f in got] == [(1, 1), (3, 3), (5, 1)]
    assert ray.get(rec.stats.remote())["dropped_stale"] == 2


def test_urgent_frame_on_the_data_lane_still_acts(ray_cluster, actors):
    ray = ray_cluster
    rec = actors(RecorderActor)
    ray.get(rec.ready.remote(), timeout=60)
    # an interrupt sent in sequence on the data lane applies at its place in the stream
    frames = [sentence(1, 1), InterruptFrame(response_id=2, seq=2, source="driver"), sentence(3, 1),
              sentence(4, 2)]
    for f in frames:
        rec.push.remote(f)
    wait_until(lambda: ray.get(rec.count.remote()) == 2)
    got = ray.get(rec.received.remote())
    assert [(f.index, f.response_id) for f in got] == [(1, 1), (4, 2)]
    stats = ray.get(rec.stats.remote())
    assert (stats["dropped_stale"], stats["processed"]) == (1, 2)


def test_shuffled_seq_numbers_arrive_in_order(ray_cluster, actors):
    ray = ray_cluster
    rec = actors(RecorderActor)
    ray.get(rec.ready.remote(), timeout=60)
    order = list(range(1, 51))
    random.Random(3).shuffle(order)
    for s in order:
        rec.push.remote(sentence(s, rid=1))
    wait_until(lambda: ray.get(rec.count.remote()) == 50)
    got = ray.get(rec.received.remote())
    assert [f.seq for f in got] == list(range(1, 51))
    assert [f.index for f in got] == list(range(1, 51))
    stats = ray.get(rec.stats.remote())
    assert (stats["skipped_gap"], stats["held"]) == (0, 0)


def test_emit_delivers_in_order_between_stages(ray_cluster, actors):
    ray = ray_cluster
    sender, rec = actors(SenderActor), actors(RecorderActor)
    targets = {"recorder": rec}
    ray.get([sender.connect.remote(targets), sender.ready.remote(), rec.ready.remote()], timeout=60)
    assert ray.get(sender.send_many.remote("recorder", 200)) == 200
    wait_until(lambda: ray.get(rec.count.remote()) >= 200)
    got = ray.get(rec.received.remote())
    assert [f.seq for f in got] == list(range(1, 201))
    assert [f.index for f in got] == list(range(1, 201))
    assert {f.source for f in got} == {"sender"}
    assert {f.session_id for f in got} == {"default"}
    stats = ray.get(rec.stats.remote())
    assert (stats["processed"], stats["skipped_gap"], stats["held"]) == (200, 0, 0)
    # emitting to a stage that is not connected is a no-op, and uses no sequence number
    assert ray.get(sender.send_many.remote("nobody", 3)) == 3
    assert ray.get(sender.send_many.remote("recorder", 1)) == 1
    wait_until(lambda: ray.get(rec.count.remote()) == 201)
    assert ray.get(rec.received.remote())[-1].seq == 201


def test_a_failing_frame_is_reported_and_the_stage_goes_on(ray_cluster, actors):
    ray = ray_cluster
    failing, session = actors(FailingActor), actors(RecorderActor)
    ray.get([failing.connect.remote({"session": session}), failing.ready.remote(), session.ready.remote()],
            timeout=60)
    failing.push.remote(sentence(1, 1, text="boom"))
    failing.push.remote(sentence(2, 1, text="fine"))
    wait_until(lambda: ray.get(failing.count.remote()) == 1 and ray.get(session.count.remote()) == 1)
    [ok] = ray.get(failing.received.remote())
    assert ok.text == "fine"
    [err] = ray.get(session.received.remote())
    assert isinstance(err, StageError) and (err.stage, err.response_id, err.session_id) == ("failing", 1, "default")
    assert "boom" in err.message
    assert ray.get(failing.stats.remote())["processed"] == 1


def test_each_conversation_has_its_own_gate_and_a_closed_one_takes_nothing(ray_cluster, actors):
    ray = ray_cluster
    rec = actors(RecorderActor)
    ray.get([rec.ready.remote(), rec.open_conversation.remote(ConversationSpec("other"))], timeout=60)
    ray.get(rec.control.remote(InterruptFrame(response_id=5)), timeout=ACK_S)  # cuts "default" only
    rec.push.remote(SentenceFrame(text="a", index=1, response_id=1, seq=1, source="x", session_id="default"))
    rec.push.remote(SentenceFrame(text="b", index=2, response_id=1, seq=2, source="x", session_id="other"))
    wait_until(lambda: ray.get(rec.count.remote()) == 1)
    assert [(f.session_id, f.text) for f in ray.get(rec.received.remote())] == [("other", "b")]
    assert ray.get(rec.close_conversation.remote("other")) is True
    rec.push.remote(SentenceFrame(text="c", index=3, response_id=1, seq=3, source="x", session_id="other"))
    rec.push.remote(SentenceFrame(text="d", index=4, response_id=9, seq=4, source="x", session_id="default"))
    wait_until(lambda: ray.get(rec.count.remote()) == 2)
    assert [f.text for f in ray.get(rec.received.remote())] == ["b", "d"]
    stats = ray.get(rec.stats.remote())
    assert (stats["unknown_conversation"], stats["dropped_stale"], stats["conversations"]) == (1, 1, 1)
