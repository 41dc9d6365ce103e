"""The shared playback clock: written by the player, read by other processes."""
from __future__ import annotations

import multiprocessing as mp
import uuid

import numpy as np
import pytest

from pipeline.audio.playback_clock import REF_RATE, PlaybackClock, segment_name


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


def test_level_counts_older_playback_less_by_its_age(clock):
    # a loud block, 300 ms of silence, a quiet block: a room still rings with the loud one
    write_blocks(clock, 100.0, [(1, 0, 1000)] + [(1, 0, 0)] * 15 + [(1, 0, 10)])
    t0 = 100.32  # the quiet block
    assert clock.level(t0, t0 + 0.02) == 10.0
    # the loud block ended 300 ms before t0: 30 dB down at 100 dB/s
    assert clock.level(t0, t0 + 0.02, tail_s=0.6, decay_db_s=100.0) == pytest.approx(1000 * 10 ** (-30 / 20), rel=0.01)
    assert clock.level(t0, t0 + 0.02, tail_s=0.2, decay_db_s=100.0) == 10.0  # out of reach


def test_level_read_back_from_a_known_sample_is_not_shifted_by_a_stall(clock):
    """A loud word, the speaker stalls 0.5 s (no blocks), then a quiet one and a loud one. At the
    loud word after the stall, a span read forward from before the stall maps it 0.5 s late and
    finds the quiet word; read back from the sample heard now (the canceller's cursor) it finds
    the loud one."""
    write_blocks(clock, 100.0, [(1, 0, 1000)] * 5)  # 100.00-100.10
    write_blocks(clock, 100.6, [(1, 0, 10)] * 10 + [(1, 0, 2000)] * 5)  # 100.60-100.80 quiet, then loud
    t = 100.82  # the loud word after the stall; its sample index:
    now = clock.index_at(t)
    assert clock.level(t - 0.15, t + 0.02, tail_s=0.6, decay_db_s=100.0) < 2000 * 10 ** (-10 / 20)
    assert clock.level(t - 0.15, t + 0.02, tail_s=0.6, decay_db_s=100.0, end_index=now + 320) == 2000.0


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


def test_a_clock_made_but_not_yet_laid_out_is_not_attached():
    """A reader that attached between the segment's creation and its header being written kept
    empty rings for good (the avatar then never saw the reply as audible): it is told "not yet"."""
    from multiprocessing import shared_memory

    name = segment_name(uuid.uuid4().hex[:8])
    raw = shared_memory.SharedMemory(name=name, create=True, size=4096)  # zeros: no header yet
    try:
        assert PlaybackClock.attach(name) is None
    finally:
        raw.close()
        raw.unlink()
    made = PlaybackClock.create(name, output_rate=24000, seconds=1.0)
    try:
        reader = PlaybackClock.attach(name)
        assert reader is not None and len(reader.blocks) > 0
        reader.close()
    finally:
        made.close()


def test_ring_wraps_without_mixing_old_audio(clock):
    n = int(2.5 * REF_RATE / 320)  # more than the 2 s ring
    write_blocks(clock, 0.0, [(1, i * 480, i % 100 + 1) for i in range(n)])
    last_t = (n - 1) * 0.02
    assert (clock.reference(last_t, 320) == (n - 1) % 100 + 1).all()
    assert not clock.reference(0.0, 320).any()  # overwritten long ago: silence, not new audio


def _ramp_blocks(c, t0, n_blocks, jitter_s=None):
    """Blocks whose samples count up (sample i has value i), stamped every 20 ms (+ jitter)."""
    for i in range(n_blocks):
        dt = 0.0 if jitter_s is None else jitter_s[i]
        c.write((np.arange(320) + 320 * i).astype(np.int16), t0 + i * 0.02 + dt, 1, 480 * i)


def test_cursor_reads_an_unbroken_stream_through_jittery_stamps(clock):
    from pipeline.audio.playback_clock import ReferenceCursor

    rng = np.random.default_rng(0)
    _ramp_blocks(clock, 100.0, 90, rng.uniform(-0.0004, 0.0004, 90))  # +-0.4 ms stamp jitter
    cursor = ReferenceCursor(clock)
    direct, through = [], []
    for k in range(40):  # 32 ms mic blocks whose own stamps jitter too
        t = 100.05 + k * 0.032 + rng.uniform(-0.0003, 0.0003)
        direct.append(clock.reference(t, 512))
        through.append(cursor.read(t, 512))
    d, c = np.concatenate(direct).astype(int), np.concatenate(through).astype(int)
    assert (np.diff(d) != 1).any()  # read by the stamps alone, samples are skipped or repeated
    assert (np.diff(c) == 1).all()  # the cursor's stream is continuous
    assert cursor.jumps == 0


def test_cursor_jumps_when_the_clocks_move_beyond_its_tolerance(clock):
    from pipeline.audio.playback_clock import ReferenceCursor

    _ramp_blocks(clock, 100.0, 90)
    cursor = ReferenceCursor(clock)  # 2 ms
    first = cursor.read(100.1, 512)
    assert first[0] == int(0.1 * REF_RATE)
    # the next block claims to be 10 ms later than the stream's continuation: an xrun, a stall
    second = cursor.read(100.1 + 0.032 + 0.010, 512)
    assert second[0] == int((0.1 + 0.042) * REF_RATE) and cursor.jumps == 1
