"""Sound-device stamps on the wall clock: PortAudio times, drift, jitter, steps."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.stream_time import StreamClock, StreamTime


def test_stream_time_maps_portaudio_times_whatever_their_base():
    st = StreamTime()
    base = 5000.0  # a host whose stream time counts from boot, not the epoch
    now = time.time()
    dac = st.wall(stream_time=now - base + 0.040, current_time=now - base)
    assert dac == pytest.approx(now + 0.040, abs=0.005)
    # a callback that ran 30 ms late (the GIL): its times are still PortAudio's, so is the result
    cur = time.time() - base - 0.030
    assert st.wall(cur + 0.040, cur) == pytest.approx(time.time() - 0.030 + 0.040, abs=0.005)
    assert st.callback_late_ms()["max"] >= 25


def test_stream_time_without_host_times_falls_back_to_now():
    assert StreamTime().wall(0.0, 0.0) == pytest.approx(time.time(), abs=0.01)


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
