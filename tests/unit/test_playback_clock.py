"""The shared playback clock: written by the player, read by other processes."""
from __future__ import annotations

import multiprocessing as mp
import uuid

import numpy as np
import pytest

from pipeline.playback_clock import REF_RATE, PlaybackClock, segment_name


@pytest.fixture
def clock():
    c = PlaybackClock.create(segment_name(uuid.uuid4().hex[:8]), output_rate=24000, seconds=2.0)
    yield c
    c.close()


def write_blocks(c, t0, blocks):
    """blocks: (rid, pos, value) per 20 ms block of 320 samples at 16 kHz."""
    for i, (rid, pos, value) in enumerate(blocks):
        c.write(np.full(320, value, np.int16), t0 + i * 0.02, rid, pos)


def test_position_maps_wall_time_to_response_and_sample(clock):
    write_blocks(clock, 100.0, [(0, 0, 0), (3, 0, 1000), (3, 480, 1000), (3, 960, 0)])
    assert clock.position(100.01) == (0, 0, False)  # silence before the reply
    assert clock.position(100.02) == (3, 0, True)
    rid, pos, audible = clock.position(100.05)  # 10 ms into the 2nd block of reply 3
    assert (rid, audible) == (3, True) and pos == 480 + 240
    assert clock.position(100.07)[2] is False  # a silent block of the reply: not audible
    assert clock.position(99.0) == (0, 0, False)  # before anything written
    assert clock.position(100.5) == (3, 1440, False)  # after the last block: not audible


def test_reference_returns_what_was_heard_at_those_times(clock):
    write_blocks(clock, 100.0, [(1, 0, 10), (1, 480, 20), (1, 960, 30)])
    ref = clock.reference(100.01, 320)  # half of block 0, half of block 1
    assert (ref[:160] == 10).all() and (ref[160:] == 20).all()
    assert not clock.reference(100.2, 100).any()  # the future: silence
    assert clock.level(100.0, 100.03) == 20.0


def _reader(name, q):
    c = PlaybackClock.attach(name)
    q.put(None if c is None else (c.position(100.03), int(c.reference(100.0, 640).sum())))
    c.close()


def test_another_process_attaches_by_name_and_does_not_unlink_it(clock):
    write_blocks(clock, 100.0, [(2, 0, 5), (2, 480, 5)])
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_reader, args=(clock.shm.name, q))
    p.start()
    p.join(30)
    pos, total = q.get(timeout=5)
    assert pos[0] == 2 and pos[2] is True and total == 5 * 640
    assert PlaybackClock.attach(clock.shm.name) is not None  # still there after the reader exited


def test_attach_to_a_missing_clock_is_none():
    assert PlaybackClock.attach("kokoro-no-such-clock") is None


def test_ring_wraps_without_mixing_old_audio(clock):
    n = int(2.5 * REF_RATE / 320)  # more than the 2 s ring
    write_blocks(clock, 0.0, [(1, i * 480, i % 100 + 1) for i in range(n)])
    last_t = (n - 1) * 0.02
    assert (clock.reference(last_t, 320) == (n - 1) % 100 + 1).all()
    assert not clock.reference(0.0, 320).any()  # overwritten long ago: silence, not new audio
