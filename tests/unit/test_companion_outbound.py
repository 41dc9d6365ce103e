"""Seed 001's messages from a conversation's bus events, for one client (no server, no engine)."""
from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest

from pipeline.api.companion.live2d import ModelView
from pipeline.api.companion.outbound import Outbound, TagStripper
from pipeline.flow import bus_events as be

HARU = {"name": "haru", "expressions": [f"f0{i}" for i in range(1, 9)],
        "motions": {"idle": [{}, {}, {}], "tap_body": [{}, {}, {}], "flick_head": [{}, {}, {}]},
        "parameters": [{"id": "PARAM_MOUTH_OPEN_Y"}, {"id": "PARAM_MOUTH_FORM"}]}


def reply_events(rid: int = 1, text: str = "[happy] Hello there, friend. Bye!") -> list[be.BusEvent]:
    own = dict(session_id="s", response_id=rid, priority=2)
    deltas = ["[hap", "py] Hello", " there,", " friend.", " Bye!"]
    return [be.ReplyStarted(**own), *[be.ReplyDelta(text=d, **own) for d in deltas],
            be.ReplyTextDone(text=text, **own)]


def audio(rid: int, index: int, text: str, n: int = 2400, offset: int = 0) -> be.ReplyAudio:
    pcm = (1000 * np.sin(np.arange(n) / 5)).astype(np.int16)
    return be.ReplyAudio(session_id="s", response_id=rid, priority=2, chunk_index=index, pcm=pcm, sample_rate=24000,
                         text=text, sample_offset=offset)


def run(out: Outbound, events, **kw) -> list[dict]:
    return [m for ev in events for m in out.on_event(ev, **kw)]


def test_streamed_dialogue_strips_tags_split_over_deltas_and_every_message_names_its_reply():
    msgs = run(Outbound(), reply_events())
    kinds = [m["type"] for m in msgs]
    assert kinds[0] == "dialogue_stream_start" and kinds[-1] == "dialogue_stream_end"
    text = "".join(m["text"] for m in msgs if m["type"] == "dialogue_stream_chunk")
    assert text == "Hello there, friend. Bye!"
    assert all(m["responseId"] == 1 and m["priority"] == 2 for m in msgs)
    assert msgs[-1]["interrupted"] is False


def test_a_client_that_asked_for_no_streaming_gets_one_dialogue():
    msgs = run(Outbound(streaming=False), reply_events())
    assert [(m["type"], m["text"]) for m in msgs] == [("dialogue", "Hello there, friend. Bye!")]


def test_a_bracket_that_is_no_tag_is_not_held_back_for_ever():
    s = TagStripper()
    assert s.feed("press [") == ("press ", [])
    text, cues = s.feed("x" * 60)  # no "]" within the hold: it was text after all
    assert text == "[" + "x" * 60 and cues == []


def test_audio_chunks_are_whole_streams_with_a_timeline_at_the_cues_place_then_a_reply_end():
    out = Outbound(model=ModelView(HARU))
    run(out, reply_events())
    msgs = run(out, [audio(1, 0, "[happy] Hello there, [sad] friend."),
                     be.ReplyFinished(session_id="s", response_id=1, priority=2, audio=True)])
    start, chunk, end, reply_end = msgs
    assert (start["type"], start["format"], start["sampleRate"], start["channels"]) == (
        "audio_stream_start", "pcm_s16le", 24000, 1)
    happy, sad = start["timeline"]
    assert happy["timing"] == 0.0 and sad["timing"] == pytest.approx(100 * 13 / 20, abs=0.1)  # "Hello there, |friend."
    assert happy["commands"][0] == {"type": "live2d", "action": "expression", "expressionIndex": 4,
                                    "expression": "f05"}  # Haru's happy face, by index and by name
    assert {"type": "live2d", "action": "motion", "group": "tap_body", "index": 0} in happy["commands"]
    assert len(np.frombuffer(base64.b64decode(chunk["data"]), "<i2")) == 2400 and chunk["chunkIndex"] == 0
    assert end["type"] == "audio_stream_end" and end["chunkIndex"] == 0 and end["interrupted"] is False
    assert reply_end["type"] == "audio_stream_end" and "chunkIndex" not in reply_end


def test_wav_on_request():
    [start, chunk, _] = run(Outbound(audio="wav"), [audio(3, 0, "Hi.")])
    assert start["format"] == "wav"
    with wave.open(io.BytesIO(base64.b64decode(chunk["data"]))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (24000, 1, 2400)
    with pytest.raises(ValueError):
        Outbound(audio="mp3")  # never mp3


def test_a_cut_reply_ends_its_streams_interrupted_closes_the_mouth_and_sends_nothing_more():
    out = Outbound(model=ModelView(HARU))
    events = reply_events()[:3]  # started, two deltas: still streaming
    run(out, events + [audio(1, 0, "Hello")])
    cut = run(out, [be.ReplyFinished(session_id="s", response_id=1, priority=2, text="Hello", interrupted=True,
                                     audio=True)])
    assert [(m["type"], m.get("interrupted")) for m in cut] == [
        ("dialogue_stream_end", True), ("audio_stream_end", True), ("live2d", None)]
    assert cut[2] == {"type": "live2d", "action": "parameter", "parameterId": "PARAM_MOUTH_OPEN_Y", "value": 0,
                      "responseId": 1, "priority": 2}
    late = [be.ReplyDelta(session_id="s", response_id=1, priority=2, text=" more"), audio(1, 1, "more")]
    assert run(out, late) == []  # the rest of a cut reply never goes out


def test_without_audio_the_cues_go_out_as_the_text_streams():
    out = Outbound(model=ModelView(HARU), audio="none")
    msgs = run(out, reply_events(), live_cues=True)
    sync = [m for m in msgs if m["type"] == "sync_command"]
    assert len(sync) == 1 and [c["action"] for c in sync[0]["commands"]] == ["expression", "motion"]
    assert run(out, [audio(2, 0, "x")]) == []


def test_a_model_with_no_expression_for_it_shows_the_emotion_with_its_parameters():
    model = ModelView({"expressions": [], "parameters": ["ParamMouthForm", "ParamEyeLSmile", "ParamEyeRSmile",
                                                         "ParamMouthOpenY"]})
    [batch] = model.cue("happy")
    assert batch["action"] == "parameter_batch"
    assert sorted(p["id"] for p in batch["parameters"]) == ["ParamEyeLSmile", "ParamEyeRSmile", "ParamMouthForm"]
    assert ModelView().cue("sad") == [{"type": "live2d", "action": "expression", "expression": "sad"}]


def test_notices_are_system_messages_with_a_code():
    [m] = Outbound().on_event(be.Notice(session_id="s", level="error", code="llm_failed", message="down",
                                        response_id=4))
    assert m == {"type": "system", "data": {"code": "llm_failed", "message": "down", "level": "error",
                                            "responseId": 4}}
