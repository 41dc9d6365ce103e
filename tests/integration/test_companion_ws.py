"""The companion WebSocket (seed 001) on the real server: `kokoro-engine serve` with the real
STT and TTS, the scripted LLM over loopback, and scripted front ends as real clients."""
from __future__ import annotations

import json
import threading
import time

import pytest

from actors.stt import transcribe
from pipeline.audio.convert import Resampler, to_float32
from tests.rigs.companion import Companion
from tests.rigs.fake_llm import FakeLLM
from tests.rigs.served import AUTH, serving

pytestmark = pytest.mark.integration

PARIS = "[happy] The capital of France is Paris. It sits on the river Seine."
STORY = ("Once upon a time, a small red fox lived by a quiet river. Every morning she watched the fish, and every "
         "evening she told the owls what she had seen. One day the river was gone, so she followed the road into "
         "the hills until she found it again, splashing down from the mountains.")
SHORT = "Sure, I can do that for you."


@pytest.fixture(scope="module")
def llm():
    replies = {"capital": PARIS, "story": STORY, "weather": "It will be sunny tomorrow.", "who are you": SHORT}
    replies.update({f"client {i}": f"Reply number {i} for you." for i in range(8)})
    with FakeLLM(SHORT, ttft=0.2, tokens_per_s=8.0, replies=replies, fail_on=("broken",)) as f:
        yield f


@pytest.fixture(scope="module")
def served(llm, tmp_path_factory):
    with serving(llm, tmp_path_factory.mktemp("companion-data")) as s:
        yield s


@pytest.fixture
def client(served):
    c = Companion(served.port)
    yield c
    c.close()


def status(served) -> dict:
    return served.http("GET", "/status", headers=AUTH).json()


def words(text: str) -> set[str]:
    return {"".join(ch for ch in w.lower() if ch.isalnum()) for w in text.split()}


def test_a_reply_streams_its_text_and_its_audio_says_it(client, whisper):
    assert {c["name"] for c in client.commands} >= {"help", "info", "clear", "voice", "persona"}
    client.say("What is the capital of France?")
    r = client.reply()
    assert r.text == "The capital of France is Paris. It sits on the river Seine." and not r.interrupted
    kinds = [m["type"] for m in r.messages]
    assert kinds[0] == "dialogue_stream_start" and "dialogue_stream_end" in kinds
    assert all(m["priority"] == 2 for m in r.messages)
    assert r.timelines[0][0]["timing"] == 0.0  # the [happy] cue, at the start of the first chunk
    heard = transcribe(whisper, to_float32(Resampler(r.rate, 16000)(r.audio)), "en", 1, 0.6)
    assert {"capital", "france", "river"} <= words(heard), heard


def test_metrics_count_the_turns_and_their_latencies(client, served):
    import re

    def count(text: str, name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    before = served.http("GET", "/metrics", headers=AUTH).text
    client.say("What is the capital of France?")
    client.reply()
    after = ""
    for _ in range(50):  # the turn finishes when the client's audio is done
        after = served.http("GET", "/metrics", headers=AUTH).text
        if count(after, 'kokoro_turns_total{state="done"}') > count(before, 'kokoro_turns_total{state="done"}'):
            break
        time.sleep(0.1)
    for name in ("kokoro_turn_ttft_seconds_count", "kokoro_turn_first_audio_synth_seconds_count"):
        assert count(after, name) == count(before, name) + 1, (name, after)
    assert count(after, "kokoro_turn_ttft_seconds_sum") - count(before, "kokoro_turn_ttft_seconds_sum") >= 0.15
    assert served.http("GET", "/metrics").status_code == 401


def test_a_second_message_cuts_the_reply_and_the_history_keeps_what_was_sent(client, llm):
    client.say("Tell me a story.")
    first = client.reply(until=lambda r: bool(r.chunks))  # its first audio is out
    client.say("What is the weather tomorrow?")
    cut = client.reply(into=first)  # the rest of it: its ends say it was cut
    assert cut.interrupted
    nxt = client.reply(skip=(first.response_id,))
    assert nxt.response_id != first.response_id and nxt.text == "It will be sunny tomorrow."
    assert not [m for m in client.seen if m.get("responseId") == first.response_id
                and m["type"] in ("dialogue_stream_chunk", "audio_stream_chunk") and m["_t"] > cut.messages[-1]["_t"]]
    req = next(r for r in reversed(llm.requests) if "weather" in str(r["messages"][-1]["content"]).lower())
    kept = req["messages"][-2]
    assert kept["role"] == "assistant" and kept["content"].endswith("… [interrupted by the user]")
    said = kept["content"].removesuffix("… [interrupted by the user]")
    assert said and STORY.startswith(said) and len(said) < len(STORY)  # a strict prefix: what was sent


def test_what_the_client_says_it_played_is_what_the_history_keeps(client, llm):
    client.say("Tell me a story.")
    first = client.reply(until=lambda r: bool(r.chunks))
    chunk0 = first.chunks[min(first.chunks)]
    client.send({"type": "audio_played", "responseId": first.response_id, "samples": len(chunk0) // 3})
    time.sleep(0.5)  # the report is a fire-and-forget message: let it land before the cut
    client.say("What is the weather tomorrow?")
    client.reply(into=first)
    client.reply(skip=(first.response_id,))
    req = next(r for r in reversed(llm.requests) if "weather" in str(r["messages"][-1]["content"]).lower())
    said = req["messages"][-2]["content"].removesuffix("… [interrupted by the user]")
    first_clause = "Once upon a time,"
    assert said and first_clause.startswith(said) and len(said) < len(first_clause), said  # a third of it


def test_context_mid_reply_never_interrupts_and_the_next_prompt_carries_it(client, llm):
    client.say("Tell me a story.")
    first = client.reply(until=lambda r: bool(r.chunks))
    client.send({"type": "character_info", "useCustom": True, "name": "Neko", "personality": "a cheerful cat"})
    client.send({"type": "model_info", "modelInfo": {"expressions": ["smile", "cry"], "motions": {}}})
    r = client.reply(into=first)  # the story plays to its end
    assert not r.interrupted and r.text == STORY
    client.say("Who are you?")
    client.reply()
    system = llm.requests[-1]["messages"][0]["content"]
    assert "You are Neko: a cheerful cat" in system and "smile, cry" in system


def test_a_tap_waits_behind_a_typed_reply_and_runs_after_it(client, llm):
    client.say("What is the capital of France?")
    first = client.reply(until=lambda r: bool(r.chunks))
    client.send({"type": "tap_event", "hitArea": "head", "position": {"x": 0.5, "y": 0.2}})
    assert not client.reply(into=first).interrupted  # medium never cuts high
    tap = client.reply(skip=(first.response_id,))
    assert tap.response_id > first.response_id
    assert "touched your head" in str(llm.requests[-1]["messages"][-1]["content"])


def test_commands_are_answered_directly(client):
    client.send({"type": "command_execute", "command": "voice", "args": {"name": "jf_nezumi"}})
    r = client.next(lambda m: m["type"] == "command_response")["data"]
    assert r == {"command": "voice", "success": True, "text": "voice set to jf_nezumi", "error": None}
    client.send({"type": "command_execute", "command": "nope"})
    r = client.next(lambda m: m["type"] == "command_response")["data"]
    assert r["success"] is False and "unknown command" in r["error"]


BAD = [
    ("not json {", "invalid_json"),
    (b"\x00\x01binary", "binary_not_supported"),
    (json.dumps({"text": "no type"}), "missing_type"),
    (json.dumps({"type": "teleport"}), "unknown_type"),
    (json.dumps({"type": "user_input", "text": 42}), "invalid_field"),
    (json.dumps({"type": "tap_event", "hitArea": "head", "position": "up"}), "invalid_field"),
    (json.dumps({"type": "user_input", "text": ""}), "empty_message"),
    (json.dumps({"type": "user_input", "text": "x" * (2 * 1024 * 1024)}), "message_too_large"),
    (json.dumps({"type": "file_upload", "fileName": "a.bin", "fileSize": 200 * 2**20, "data": "aGk="}),
     "file_too_large"),
    (json.dumps({"type": "file_upload", "fileName": "a.bin", "data": "%%%"}), "invalid_base64"),
    (json.dumps({"type": "plugin_response", "callId": "nobody-waits"}), "unknown_call"),
    (json.dumps({"type": "audio_played", "responseId": "1", "samples": 10}), "invalid_field"),
]


def test_bad_input_gets_a_coded_system_message_and_the_connection_goes_on(served, client):
    other = Companion(served.port)
    try:
        other.say("What is the capital of France?")
        for raw, code in BAD:
            client.ws.send(raw)
            got = client.next(lambda m: m["type"] == "system")["data"]
            assert got["code"] == code, (raw[:60], got)
        client.say("What is the weather tomorrow?")
        assert client.reply().text == "It will be sunny tomorrow."
        assert other.reply().text == "The capital of France is Paris. It sits on the river Seine."  # the other client never noticed
        assert not [m for m in other.seen if m["type"] == "system"]
    finally:
        other.close()


def test_a_failing_llm_is_a_system_message(client):
    client.say("This one is broken.")
    got = client.next(lambda m: m["type"] == "system")["data"]
    assert got["code"] == "llm_failed" and "LLM endpoint" in got["message"]
    client.say("What is the capital of France?")
    assert client.reply().text == "The capital of France is Paris. It sits on the river Seine."


def test_a_file_upload_is_stored_and_offered_to_the_reply(client, llm, served):
    import base64

    note = b"My cat is called Miso and she likes tuna."
    client.send({"type": "file_upload", "fileName": "../../cat.txt", "fileType": "text/plain", "fileSize": len(note),
                 "data": base64.b64encode(note).decode()})
    client.reply()
    sent = str(llm.requests[-1]["messages"][-1]["content"])
    assert "cat.txt" in sent and "Miso" in sent and ".." not in sent


def test_a_vanished_client_releases_its_conversation_and_its_work(served, llm):
    base = status(served)["conversations"]
    c = Companion(served.port)
    assert status(served)["conversations"] == base + 1
    closed0 = llm.closed_early
    c.say("Tell me a story.")
    c.reply(until=lambda r: bool(r.chunks))
    c.ws.socket.close()  # gone mid-reply, without a goodbye
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and status(served)["conversations"] > base:
        time.sleep(0.2)
    assert status(served)["conversations"] == base
    while time.monotonic() < deadline and llm.closed_early == closed0:
        time.sleep(0.2)
    assert llm.closed_early > closed0  # its LLM stream was cut, not read to the end


@pytest.mark.parametrize("n", [2, 8])
def test_many_clients_at_once_each_get_their_own_answers(served, n):
    clients = [Companion(served.port) for _ in range(n)]
    got: dict[int, str] = {}
    try:
        def one(i: int) -> None:
            clients[i].say(f"Hello, I am client {i}.")
            got[i] = clients[i].reply(timeout=180).text

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(240)
        assert got == {i: f"Reply number {i} for you." for i in range(n)}
        for i, c in enumerate(clients):  # no cross-talk: nobody saw another's words
            texts = " ".join(m.get("text", "") for m in c.seen if m["type"] == "dialogue_stream_chunk")
            assert all(f"number {j} " not in texts for j in range(n) if j != i), texts
        assert len({c.session_id for c in clients}) == n
    finally:
        for c in clients:
            c.close()


def test_a_client_joins_another_conversation(served):
    a = Companion(served.port)
    b = Companion(served.port, session=a.session_id, stream=False)
    try:
        assert b.session_id == a.session_id
        b.say("What is the capital of France?")  # its input joins the conversation ...
        ra = a.reply()  # ... and both see its stream, each in the form it asked for
        assert ra.text == "The capital of France is Paris. It sits on the river Seine."
        d = b.next(lambda m: m["type"] == "dialogue")
        assert d["text"] == ra.text and d["responseId"] == ra.response_id
    finally:
        a.close()
        b.close()
