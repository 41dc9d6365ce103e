"""The avatar stage's glue, in-process (no Ray, no window): cues at the time their words are
heard, dropped once their reply is cut; taps to the session; errors reported once; and the
player telling the avatar when a chunk becomes audible."""
from __future__ import annotations

import time

import numpy as np
import pytest

from actors.avatar import AvatarStage
from avatar.emotion import ExpressionMap
from pipeline.config import Config
from pipeline.flow.events import StageError
from pipeline.flow.frames import ChunkAudibleFrame, EndOfTurnFrame, InterruptFrame, TTSAudioFrame
from pipeline.flow.routes import ConversationSpec

HARU_EXPRESSIONS = [f"f0{i}" for i in range(1, 9)]
HARU_MOTIONS = {"idle": 3, "tap_body": 3, "flick_head": 3, "pinch_in": 3, "pinch_out": 3, "shake": 3}


class _Method:
    def __init__(self, calls: list, name: str) -> None:
        self.calls, self.name = calls, name

    def remote(self, *args) -> None:
        self.calls.append((self.name, *args))


class FakeHandle:
    def __init__(self, calls: list) -> None:
        self.push = _Method(calls, "push")
        self.control = _Method(calls, "control")
        self.send_input = _Method(calls, "send_input")


class FakeProc:
    """Stands in for AvatarProcess: records the commands."""

    def __init__(self) -> None:
        self.alive = True
        self.errors: list[str] = []
        self.infos: list[str] = []
        self.commands: list[tuple] = []
        self.frames: list[tuple[float, float]] = []

    def set_expression(self, name):
        self.commands.append(("expression", name, time.time()))

    def start_motion(self, group, index=0, priority=2):
        self.commands.append(("motion", group, index, priority))

    def take_frames(self):
        out, self.frames = self.frames, []
        return out

    def quit(self, timeout=10.0):
        self.alive = False
        return 0


def _config(tmp_path, model: str = "nope") -> Config:
    cfg = Config()
    cfg.avatar.enabled, cfg.avatar.headless = True, True
    cfg.avatar.model, cfg.avatar.models_dir = model, str(tmp_path / "store")
    cfg.engine.run_id = "unit"
    return cfg


def _started_without_a_model(tmp_path, calls: list) -> tuple[AvatarStage, dict]:
    """A stage whose model does not exist: no window is spawned."""
    st = AvatarStage(_config(tmp_path))
    st.ready()
    st.connect({"session": FakeHandle(calls)})
    st.open_conversation(ConversationSpec("default", "player"))
    return st, st.started(timeout=10)


@pytest.fixture
def stage(tmp_path):
    """A stage with no model, then given a fake face."""
    calls: list = []
    st, status = _started_without_a_model(tmp_path, calls)
    assert not status["running"]
    calls.clear()
    st.calls = calls
    st.fake = FakeProc()
    st._attach(st.fake, {"expressions": HARU_EXPRESSIONS, "motion_groups": HARU_MOTIONS},
               ExpressionMap.build(HARU_EXPRESSIONS, HARU_MOTIONS, model_name="haru"))
    yield st
    st.release()


def _wait(cond, timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_a_missing_model_is_one_clear_error_event_and_no_face(tmp_path):
    calls: list = []
    st, status = _started_without_a_model(tmp_path, calls)
    st.started(timeout=1)  # asked again: still one report
    assert not status["running"] and "avatar disabled: no avatar model 'nope'" in status["error"]
    errors = [f for name, f in calls if name == "push" and isinstance(f, StageError)]
    assert len(errors) == 1
    assert (errors[0].stage, errors[0].message) == ("avatar", status["error"])
    # the rest still answers
    assert st.state() == {"name": "Kokoro", "current_expression": "neutral", "mood": 0.5, "is_speaking": False}
    assert st.mouth_track(0.0, time.time(), wait_s=0.1) == []
    assert st.click(10, 10) is False and st.capture("/nonexistent") is False
    # and the character's state still follows the tags (a front end may draw the face)
    st.push(ChunkAudibleFrame(response_id=1, seq=1, text="[sad] Oh.", t_audible=time.time(), duration=0.5))
    assert _wait(lambda: st.state()["current_expression"] == "sad") and st.state()["mood"] < 0.5
    st.release()


def test_no_display_is_a_clear_error_not_a_crash(tmp_path, monkeypatch):
    from tests.unit.avatar_fixtures import make_v2

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    model = make_v2(tmp_path / "tiny")
    st = AvatarStage(_config(tmp_path, str(model)))
    st.ready()
    st.connect({})
    status = st.started(timeout=60)
    assert not status["running"] and status["error"].startswith("avatar disabled: no display")
    st.release()


# Cue timing: a cue is applied by the stage's thread when its time comes, late by that thread's
# wake-up (~1 ms here). The windows below allow 0.5 s, for a 3x slower CPU under load, and the
# cues are due >1 s after the push, so a slow test line does not race them.
LATE_S = 0.5


def _expressions(stage) -> list[str]:
    return [c[1] for c in stage.fake.commands if c[0] == "expression"]


def test_a_tag_sets_its_expression_when_its_words_are_heard(stage):
    t0, duration = time.time() + 0.5, 4.0
    text = "Well. [happy] That is great news!"  # the cue sits after "Well." in the spoken text
    stage.push(ChunkAudibleFrame(response_id=1, seq=1, text=text, t_audible=t0, duration=duration))
    due = t0 + duration * len("Well. ") / len("Well. That is great news!")  # ~1.5 s from now
    time.sleep(0.1)
    assert stage.fake.commands == [] and time.time() < due  # not yet heard
    assert _wait(lambda: stage.fake.commands, timeout=due - time.time() + 10)
    assert _expressions(stage) == ["f05"]  # haru's smile
    assert ("motion", "tap_body", 0, 2) in stage.fake.commands
    applied = next(c[2] for c in stage.fake.commands if c[0] == "expression")
    # at its words, not at the chunk's start (t0, ~1 s earlier) nor its end (t0 + 4 s)
    assert due <= applied < due + LATE_S, (applied - due)
    st = stage.state()
    assert st["current_expression"] == "happy" and st["mood"] > 0.5
    cue = stage.status()["cues"][-1]
    assert (cue["emotion"], cue["expression"], cue["response_id"]) == ("happy", "f05", 1)


def test_a_cue_of_a_cut_reply_is_dropped(stage):
    stage.push(ChunkAudibleFrame(response_id=1, seq=1, text="[sad] Oh no.", t_audible=time.time() + 0.2,
                                 duration=1.0))
    stage.control(InterruptFrame(response_id=2))
    stage.push(ChunkAudibleFrame(response_id=2, seq=2, text="[surprised] Oh!", t_audible=time.time() + 0.4,
                                 duration=0.5))
    assert _wait(lambda: stage.fake.commands, timeout=10)
    # cues fall due in time order: once the live reply's cue is applied, the cut reply's earlier
    # one has come and gone: it was dropped, not just late
    surprised = stage.expression_map.lookup("surprised")[0]
    assert _expressions(stage) == [surprised] and surprised is not None
    assert [c["response_id"] for c in stage.status()["cues"]] == [2]
    assert stage.state()["current_expression"] == "surprised"


def test_untagged_text_and_unknown_tags_change_nothing(stage):
    stage.push(ChunkAudibleFrame(response_id=1, seq=1, text="Plain words [laughs] here.", t_audible=time.time()))
    # a tagged chunk after it: once its cue shows, the one before had its turn
    stage.push(ChunkAudibleFrame(response_id=1, seq=2, text="[sad] Oh.", t_audible=time.time() + 0.2,
                                 duration=0.5))
    assert _wait(lambda: stage.fake.commands, timeout=10)
    assert _expressions(stage) == [stage.expression_map.lookup("sad")[0]]
    assert [c["emotion"] for c in stage.status()["cues"]] == ["sad"]


def test_a_tap_goes_to_the_session_as_a_tap_event(stage):
    stage._on_tap("head", 0.5, 0.25)
    [(name, session_id, msg)] = stage.calls
    assert (name, session_id) == ("send_input", "default")
    assert msg == {"type": "tap_event", "hitArea": "head", "position": {"x": 0.5, "y": 0.25}}
    from pipeline.conversation.inputs import parse_input
    from pipeline.flow.priorities import Priority

    assert parse_input(msg).priority == Priority.MEDIUM
    assert stage.status()["taps"][-1]["hitArea"] == "head"


def test_mouth_track_is_kept_and_cut_to_the_span_asked(stage):
    now = time.time()
    stage.fake.frames = [(now - 1.0, 0.0), (now - 0.5, 0.4), (now, 0.8)]
    assert stage.mouth_track(now - 0.6, now, wait_s=0.5) == [[now - 0.5, 0.4], [now, 0.8]]
    assert stage.mouth_track(now - 2, None) == [[now - 1.0, 0.0], [now - 0.5, 0.4], [now, 0.8]]


def test_a_dead_window_process_is_reported_once(stage):
    stage.fake.errors.append("the avatar window was closed")
    stage.fake.alive = False
    assert _wait(lambda: any(name == "push" and isinstance(f, StageError) for name, f in stage.calls))
    time.sleep(0.3)
    errors = [f for name, f in stage.calls if name == "push" and isinstance(f, StageError)]
    assert len(errors) == 1 and "avatar window process ended: the avatar window was closed" in errors[0].message


def test_the_player_tells_the_avatar_when_a_chunk_is_heard(tmp_path):
    from actors.player import PlayerStage

    calls: list = []
    cfg = Config()
    cfg.engine.run_id = f"unit-{time.monotonic_ns()}"
    player = PlayerStage(cfg)
    player.ready()
    player.connect({"avatar": FakeHandle(calls), "session": FakeHandle([])})
    player.open_conversation(ConversationSpec("default", "player"))
    try:
        player.open_wav(str(tmp_path / "out.wav"), 24000, realtime=False, session_id="default")
        pcm = (3000 * np.sin(np.arange(12000) / 10)).astype(np.int16)
        text = "[happy] Hello there."
        player.push(TTSAudioFrame(pcm=pcm, sample_rate=24000, response_id=1, seq=1, text=text, text_start=0,
                                  text_end=len(text), chunk_index=0))
        player.push(EndOfTurnFrame(response_id=1, seq=2))
        assert _wait(lambda: calls)
        assert _wait(lambda: player.chunks and "t_end" in player.chunks[0])
    finally:
        player.release()
    [(name, frame)] = calls
    assert name == "push" and isinstance(frame, ChunkAudibleFrame)
    assert (frame.response_id, frame.text, frame.chunk_index) == (1, text, 0)
    assert frame.t_audible == player.chunks[0]["t_start"] and frame.duration == pytest.approx(0.5)
