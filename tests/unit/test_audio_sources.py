"""The mic's audio sources, driven by a recording context (no mic actor, no device)."""
from __future__ import annotations

import threading
import time

import numpy as np

from pipeline.audio.convert import write_wav
from pipeline.audio.sources import FileSource, PushSource
from pipeline.flow.events import InputDone


class Ctx:
    block_size = 256

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, float]] = []
        self.events: list = []

    def block(self, pcm, capture_time):
        self.blocks.append((pcm.copy(), capture_time))

    def event(self, ev):
        self.events.append(ev)

    def error(self, message):
        raise AssertionError(message)

    def new_echo_path(self):
        pass

    def playback(self):
        return None


def test_a_file_is_fed_in_blocks_on_its_own_clock_then_silence(tmp_path):
    pcm = (np.arange(1000) % 100).astype(np.int16)
    write_wav(tmp_path / "a.wav", pcm, 16000)
    src = FileSource(str(tmp_path / "a.wav"), realtime=False, trailing_silence_ms=64)
    t0 = src.start_time()
    ctx = Ctx()
    src.run(ctx, threading.Event())
    audio = np.concatenate([b for b, _ in ctx.blocks])
    assert len(src.audio) == 1000 and np.array_equal(audio[:1000], src.audio) and not audio[1000:].any()
    assert len(audio) == 4 * 256 + 1024  # the file padded to whole blocks, then 64 ms of silence
    assert [t for _, t in ctx.blocks] == [t0 + i * 256 / 16000 for i in range(len(ctx.blocks))]
    assert [type(e) for e in ctx.events] == [InputDone]


def test_pushed_audio_comes_out_in_the_mics_blocks_dated_from_its_arrival():
    src, ctx, stop = PushSource(), Ctx(), threading.Event()
    t = threading.Thread(target=src.run, args=(ctx, stop))
    t.start()
    before = time.time()
    assert src.feed(np.ones(300, np.int16)) and src.feed(2 * np.ones(300, np.int16))
    deadline = time.monotonic() + 5
    while len(ctx.blocks) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(5)
    (b1, t1), (b2, t2) = ctx.blocks
    assert list(b1) == [1] * 256 and list(b2) == [1] * 44 + [2] * 212  # 600 samples: 2 blocks, 88 left over
    assert before - 300 / 16000 - 0.01 <= t1 <= time.time() and t2 == t1 + 256 / 16000
