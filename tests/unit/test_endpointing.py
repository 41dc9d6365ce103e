"""Endpointer on synthetic speech-probability sequences (32 ms windows)."""
from __future__ import annotations

import pytest

from pipeline.audio.endpointing import Endpointer, SpeechEvent

W = 0.032
SPEECH, SILENCE, MIDDLE = 0.9, 0.05, 0.42  # MIDDLE: between neg_threshold (0.35) and threshold (0.5)


def make(**kw) -> Endpointer:
    # 3 windows of speech to start, 16 of silence to stop, a "pause" after 5
    args = dict(window_s=W, threshold=0.5, neg_threshold=0.35, min_speech_s=0.096, endpoint_silence_s=0.512,
                pause_s=0.16)
    args.update(kw)
    return Endpointer(**args)


def feed(ep: Endpointer, probs: list[float], first: int = 0, onsets: bool = False,
         start_threshold: float | None = None) -> list[tuple[int, SpeechEvent]]:
    """Feed windows first, first+1, ... and return (window index, event) for each event
    (the tentative onset/reject events only with ``onsets``)."""
    out = []
    for i, p in enumerate(probs, start=first):
        ev = ep.update(p, i * W, start_threshold)
        if ev is not None and (onsets or ev.kind not in ("onset", "reject")):
            out.append((i, ev))
    return out


def kinds(events) -> list[str]:
    return [ev.kind for _, ev in events]


def test_window_counts_from_durations():
    ep = make()
    assert (ep.min_speech_windows, ep.endpoint_windows, ep.pause_windows) == (3, 16, 5)
    assert make(pause_s=0.0).pause_windows == 0


def test_silence_gives_no_events():
    ep = make()
    assert feed(ep, [SILENCE] * 100 + [MIDDLE] * 50) == []
    assert not ep.in_speech


def test_start_is_back_dated_to_first_speech_window():
    ep = make()
    events = feed(ep, [SILENCE] * 10 + [SPEECH] * 5)
    assert kinds(events) == ["start"]
    i, ev = events[0]
    assert i == 12  # decided on the third speech window (min_speech 96 ms)...
    assert ev.audio_time == pytest.approx(10 * W)  # ...but dated to the first one
    assert ev.detected_at == pytest.approx(13 * W)  # the end of the deciding window
    assert ep.in_speech


def test_stop_is_back_dated_to_first_silent_window_after_the_endpoint():
    ep = make(pause_s=0.0)
    events = feed(ep, [SPEECH] * 10 + [SILENCE] * 30)
    assert kinds(events) == ["start", "stop"]
    i, stop = events[1]
    assert i == 10 + 16 - 1  # the 16th silent window (512 ms endpoint)
    assert stop.audio_time == pytest.approx(10 * W)
    assert stop.detected_at - stop.audio_time == pytest.approx(0.512)
    assert not ep.in_speech


def test_endpoint_one_window_short_does_not_stop():
    ep = make(pause_s=0.0)
    events = feed(ep, [SPEECH] * 10 + [SILENCE] * 15 + [SPEECH] * 5)
    assert kinds(events) == ["start"]
    assert ep.in_speech


def test_short_blip_below_min_speech_does_not_start():
    ep = make()
    assert feed(ep, [SILENCE] * 5 + [SPEECH] * 2 + [SILENCE] * 5) == []
    # a speech run broken by more than onset_gap_s (two windows) of non-speech starts over
    assert feed(ep, [SPEECH, SPEECH, MIDDLE, SILENCE, MIDDLE, SPEECH, SILENCE, SILENCE, SILENCE], first=20) == []
    assert not ep.in_speech
    # three in a row do start, dated to the first of the three
    events = feed(ep, [SPEECH] * 3, first=30)
    assert kinds(events) == ["start"]
    assert events[0][1].audio_time == pytest.approx(30 * W)


def test_short_pause_emits_one_pause_and_no_stop():
    ep = make()
    probs = [SPEECH] * 10 + [SILENCE] * 10 + [SPEECH] * 10  # 320 ms pause < 512 ms endpoint
    events = feed(ep, probs)
    assert kinds(events) == ["start", "pause", "resume"]  # resume: the preemptive reply is dropped
    assert events[2][0] == 20 and events[2][1].audio_time == pytest.approx(20 * W)
    i, pause = events[1]
    assert i == 10 + 5 - 1  # emitted on the 5th silent window (pause_s = 160 ms)
    assert pause.audio_time == pytest.approx(10 * W)
    assert pause.detected_at - pause.audio_time == pytest.approx(0.16)
    assert ep.in_speech


def test_each_silence_gets_its_own_pause_then_the_stop():
    ep = make()
    probs = [SPEECH] * 10 + [SILENCE] * 8 + [SPEECH] * 5 + [SILENCE] * 20
    events = feed(ep, probs)
    assert kinds(events) == ["start", "pause", "resume", "pause", "stop"]
    (_, p1), (_, resume), (_, p2), (_, stop) = events[1:]
    assert resume.audio_time == pytest.approx(18 * W)
    assert p1.audio_time == pytest.approx(10 * W)
    assert p2.audio_time == pytest.approx(23 * W)
    assert stop.audio_time == pytest.approx(23 * W)  # the stop is dated to the final silence only


def test_no_pause_events_when_pause_is_off():
    ep = make(pause_s=0.0)
    events = feed(ep, [SPEECH] * 10 + [SILENCE] * 10 + [SPEECH] * 3 + [SILENCE] * 20)
    assert kinds(events) == ["start", "stop"]


def test_hysteresis_middle_values_do_not_reset_the_silence_run():
    ep = make(pause_s=0.0)
    # 10 silent windows, a long stretch of in-between values, then 6 more silent ones:
    # 16 silent windows in all, so the endpoint fires, dated to the first silent window
    probs = [SPEECH] * 10 + [SILENCE] * 10 + [MIDDLE] * 30 + [SILENCE] * 6
    events = feed(ep, probs)
    assert kinds(events) == ["start", "stop"]
    i, stop = events[1]
    assert i == len(probs) - 1
    assert stop.audio_time == pytest.approx(10 * W)


def test_hysteresis_speech_does_reset_the_silence_run():
    ep = make(pause_s=0.0)
    probs = [SPEECH] * 10 + [SILENCE] * 10 + [SPEECH] + [SILENCE] * 10
    assert kinds(feed(ep, probs)) == ["start"]
    assert ep.in_speech


def test_middle_values_alone_never_end_speech():
    ep = make()
    events = feed(ep, [SPEECH] * 10 + [MIDDLE] * 200)
    assert kinds(events) == ["start"]
    assert ep.in_speech


def test_two_utterances():
    ep = make(pause_s=0.0)
    probs = [SPEECH] * 10 + [SILENCE] * 20 + [SPEECH] * 10 + [SILENCE] * 20
    events = feed(ep, probs)
    assert kinds(events) == ["start", "stop", "start", "stop"]
    assert [round(ev.audio_time / W) for _, ev in events] == [0, 10, 30, 40]


def test_reset_returns_to_silence():
    ep = make()
    feed(ep, [SPEECH] * 5)
    assert ep.in_speech
    ep.reset()
    assert not ep.in_speech
    assert feed(ep, [SILENCE] * 30, first=5) == []
    assert kinds(feed(ep, [SPEECH] * 3, first=40)) == ["start"]


def test_onset_comes_at_the_first_speech_window_and_a_blip_is_rejected():
    ep = make()
    events = feed(ep, [SILENCE] * 5 + [SPEECH] * 2 + [SILENCE] * 3 + [SPEECH] * 4, onsets=True)
    # rejected once the gap outlasts onset_gap_s (two windows)
    assert [(i, e.kind) for i, e in events] == [(5, "onset"), (9, "reject"), (10, "onset"), (12, "start")]
    assert events[0][1].audio_time == pytest.approx(5 * W)
    assert events[0][1].detected_at == pytest.approx(6 * W)  # known as soon as the window is in


def test_a_stricter_start_threshold_while_the_engine_talks():
    ep = make()
    assert feed(ep, [0.7] * 10, onsets=True, start_threshold=0.85) == []
    assert kinds(feed(ep, [0.9] * 3, first=10, onsets=True, start_threshold=0.85)) == ["onset", "start"]


def test_a_starting_run_survives_a_short_gap():
    """Under echo the guard gates the user's quieter windows: a gap of up to two windows does not
    retract the onset (which would resume the paused reply for a moment), and speech goes on to start."""
    ep = make()
    events = feed(ep, [SILENCE] * 5 + [SPEECH] + [SILENCE] * 2 + [SPEECH] * 2, onsets=True)
    assert [(i, e.kind) for i, e in events] == [(5, "onset"), (9, "start")]
    assert events[1][1].audio_time == pytest.approx(5 * W)  # back-dated to the first speech window
    assert make(onset_gap_s=0.0).onset_gap_windows == 0


def test_windows_that_may_be_echo_neither_start_nor_retract_speech():
    ep = make()
    # alone, uncertain windows start nothing
    assert [ep.update(SPEECH, i * W, uncertain=True) for i in range(10)] == [None] * 10
    # after an onset they hold the run: the onset is not retracted, and speech then starts
    assert ep.update(SPEECH, 10 * W).kind == "onset"
    assert [ep.update(SPEECH, i * W, uncertain=True) for i in range(11, 17)] == [None] * 6
    assert ep.update(SPEECH, 17 * W) is None
    ev = ep.update(SPEECH, 18 * W)
    assert ev.kind == "start" and ev.audio_time == pytest.approx(10 * W)


def test_unconfirmed_windows_carry_an_onset_but_start_only_once_confirmed():
    """Under the engine's echo, windows that only the mic before cancellation calls speech (the
    user talking over the reply, or an echo the guard underrated) may pause the reply, but speech
    starts only once the canceller lets a window of it through: then back-dated to the run."""
    ep = make()
    ev = ep.update(SPEECH, 0, confirmed=False)
    assert ev.kind == "onset"
    assert [ep.update(SPEECH, i * W, confirmed=False) for i in range(1, 12)] == [None] * 11  # no start
    ev = ep.update(SPEECH, 12 * W, confirmed=True)
    assert ev.kind == "start" and ev.audio_time == pytest.approx(0.0)
    # never confirmed: the run ends as a rejected onset, and no speech started
    ep = make()
    events = feed(ep, [SILENCE] * 2, onsets=True)
    kinds = [ep.update(SPEECH, (2 + i) * W, confirmed=False) for i in range(8)]
    kinds += [ep.update(SILENCE, (10 + i) * W) for i in range(6)]
    assert [e.kind for e in kinds if e is not None] == ["onset", "reject"] and not events
    assert not ep.in_speech


def test_onset_once_per_run_when_the_windows_it_needs_change_mid_run():
    # under echo an onset needs two windows, one the VAD has checked against the echo's energy
    # (the user talking over it) only one: a run whose second window is such comes at once
    ep = make(min_speech_s=0.16)
    assert ep.update(SPEECH, 0, onset_windows=2) is None
    ev = ep.update(SPEECH, W, onset_windows=1)
    assert ev.kind == "onset" and ev.audio_time == pytest.approx(W)
    assert ep.update(SPEECH, 2 * W, onset_windows=1) is None  # not again in the same run
    assert ep.update(SPEECH, 3 * W, onset_windows=2) is None
    assert ep.update(SPEECH, 4 * W).kind == "start"


def test_overlapping_windows_count_the_audio_they_span():
    """A 32 ms window every 16 ms: a run of n windows spans 32 + 16 (n - 1) ms, so speech starts
    after 5 (96 ms), the endpoint takes 31 (512 ms), and each decision is dated to its window."""
    hop = 0.016
    ep = make(hop_s=hop)
    assert (ep.min_speech_windows, ep.endpoint_windows, ep.pause_windows) == (5, 31, 9)
    events = []
    for i, p in enumerate([SILENCE] * 10 + [SPEECH] * 20 + [SILENCE] * 40):
        ev = ep.update(p, i * hop)  # the window starting at i * hop
        if ev is not None and ev.kind in ("start", "stop"):
            events.append((i, ev))
    (i0, start), (i1, stop) = events
    assert i0 == 14 and start.audio_time == pytest.approx(10 * hop) and start.detected_at == pytest.approx(14 * hop + W)
    assert stop.detected_at - stop.audio_time >= 0.512 and i1 == 30 + 31 - 1
