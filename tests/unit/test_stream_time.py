"""Sound-device stamps on the wall clock: PortAudio times, drift, jitter, steps."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.audio import stream_time
from pipeline.audio.stream_time import StreamClock, StreamTime


class FakeWallClock:
    """``time.time()`` for pipeline/audio/stream_time.py: the mapping is arithmetic on the time it
    reads and PortAudio's stamps, so the tests set both (a real clock read between two lines of a
    test on a loaded CPU made 5-10 ms tolerances a race)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def time(self) -> float:
        return self.t


@pytest.fixture
def wall(monkeypatch) -> FakeWallClock:
    clock = FakeWallClock(1_700_000_000.0)
    monkeypatch.setattr(stream_time, "time", clock)
    return clock


def test_stream_time_maps_portaudio_times_whatever_their_base(wall):
    st = StreamTime()
    base = 5000.0  # a host whose stream time counts from boot, not the epoch
    now = wall.t
    dac = st.wall(stream_time=now - base + 0.040, current_time=now - base)
    assert dac == pytest.approx(now + 0.040, abs=1e-6)
    # a callback that ran 30 ms late (the GIL): its times are still PortAudio's, so is the result
    wall.t += 1.0
    cur = wall.t - base - 0.030
    assert st.wall(cur + 0.040, cur) == pytest.approx(wall.t - 0.030 + 0.040, abs=1e-6)
    assert st.callback_late_ms()["max"] == pytest.approx(30.0, abs=0.01)
    # an on-time callback after it: still mapped by the on-time offset, not the late one
    wall.t += 1.0
    assert st.wall(wall.t - base + 0.040, wall.t - base) == pytest.approx(wall.t + 0.040, abs=1e-6)


def test_stream_time_without_host_times_falls_back_to_now(wall):
    assert StreamTime().wall(0.0, 0.0) == wall.t
    assert StreamTime().callback_late_ms() == {}


def test_stream_clock_follows_a_device_running_slow():
    rate, frames = 16000, 512
    ppm = -210e-6  # PulseAudio's null sinks against the system clock
    n = 1000  # 32 s
    true = 100.0 + np.arange(n) * frames / rate * (1 - ppm)  # fewer samples per wall second
    c = StreamClock(rate)
    rng = np.random.default_rng(1)
    for s in true + rng.normal(0, 0.0003, n):
        c.update(float(s), frames)
    last = c.time_of((n - 1) * frames / rate)
    assert last == pytest.approx(true[-1], abs=0.0005)  # counting samples would be 6.7 ms off
    assert abs((100.0 + (n - 1) * frames / rate) - true[-1]) > 0.006


def test_stream_clock_ignores_outliers_and_takes_steps():
    rate, frames = 16000, 512
    c = StreamClock(rate)
    t = 100.0
    for i in range(120):  # every 12th stamp 2 ms early, as PulseAudio's capture stamps
        c.update(t + i * 0.032 - (0.002 if i % 12 == 5 else 0.0), frames)
    assert c.time_of(0.0) == pytest.approx(100.0, abs=0.0001)
    assert c.steps == 0 and c.outliers == 10
    for i in range(120, 140):  # the server moved its latency by 6.7 ms
        c.update(t + i * 0.032 + 0.0067, frames)
    assert c.steps == 1
    assert c.time_of(0.0) == pytest.approx(100.0067, abs=0.0002)


@pytest.mark.parametrize("block_ms", [10, 32])
def test_stream_clock_smooths_and_steps_by_time_not_by_callbacks(block_ms):
    # the mic opens its device with 10 ms blocks: counted in callbacks, the same clock would
    # follow the stamps' jitter 3x faster and take a 6.7 ms step on 60 ms of stamps
    rate = 48000
    frames = rate * block_ms // 1000
    c = StreamClock(rate)
    rng = np.random.default_rng(2)
    n = 20000 // block_ms  # 20 s
    for i in range(n):
        c.update(100.0 + i * block_ms / 1000 + rng.normal(0, 0.0004), frames)
    errs = []
    for i in range(n, n + 3000 // block_ms):  # 3 s more: how far the smoothed offset wanders
        c.update(100.0 + i * block_ms / 1000 + rng.normal(0, 0.0004), frames)
        errs.append(c.time_of(0.0) - 100.0)
    assert np.std(errs) < 0.00006  # 0.4 ms of jitter, averaged over ~0.64 s of stamps
    taken_after = None
    for k, i in enumerate(range(n + 3000 // block_ms, n + 4000 // block_ms)):
        c.update(100.0 + i * block_ms / 1000 + 0.0067, frames)  # the server moved its latency
        if c.steps and taken_after is None:
            taken_after = (k + 1) * block_ms / 1000
    assert taken_after is not None and 0.19 <= taken_after < 0.19 + block_ms / 1000
    assert c.time_of(0.0) == pytest.approx(100.0067, abs=0.0003)
