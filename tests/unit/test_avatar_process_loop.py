"""The avatar window process's frame loop (avatar/process.py ``_loop``) with a fake window: it
answers commands even when every frame takes longer than the frame period."""
from __future__ import annotations

import multiprocessing as mp
import threading
import time

from avatar.process import _loop


class SlowWindow:
    """A window whose every frame takes ``draw_s`` (more than the period: a busy CPU)."""

    def __init__(self, draw_s: float) -> None:
        self.draw_s = draw_s
        self.closed = False
        self.frames = 0
        self.expressions: list = []
        self.model = self

    def frame(self, mouth: float) -> float:
        time.sleep(self.draw_s)
        self.frames += 1
        return time.time()

    def set_expression(self, name) -> None:
        self.expressions.append(name)


class ClosedMouth:
    def mouth(self, t: float) -> float:
        return 0.0


def test_commands_are_answered_while_frames_run_late():
    parent, child = mp.Pipe()
    window = SlowWindow(draw_s=0.05)  # 20 fps at best, against a 30 fps period
    sent: list = []
    loop = threading.Thread(target=_loop, args=(child, window, ClosedMouth(), {"fps": 30.0},
                                                lambda *m: sent.append(m) or True), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while window.frames < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert window.frames >= 3  # running behind from the first frame
        parent.send(("expression", "f05"))
        parent.send(("quit",))
        # a command waits for at most the frame being drawn: 10 s is generous for any machine
        loop.join(10)
        assert not loop.is_alive(), "the loop did not read the quit while its frames ran late"
        assert window.expressions == ["f05"]
        assert all(m[0] == "frame" for m in sent)
    finally:
        window.closed = True  # ends a loop that missed the quit, after its next frame
        loop.join(1)
        parent.close()
        child.close()
