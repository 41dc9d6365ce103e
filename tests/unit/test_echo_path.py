"""EchoPath: open speakers (the mic follows the playback) vs headphones (it does not)."""
from __future__ import annotations

import numpy as np

from pipeline.audio.echo_path import EchoPath

rng = np.random.default_rng(0)


def speechlike(n_blocks: int, block: int = 512) -> np.ndarray:
    """Noise bursts with gaps, like words: 3 blocks on, 1 off."""
    x = (rng.standard_normal(n_blocks * block) * 3000).astype(np.int16)
    for b in range(3, n_blocks, 4):
        x[b * block:(b + 1) * block] = 0
    return x


def run(ep: EchoPath, near: np.ndarray, far: np.ndarray, block: int = 512, trusted: bool = True) -> list[bool]:
    return [ep.update(near[i:i + block], far[i:i + block], trusted) for i in range(0, len(far) - block + 1, block)]


def test_a_delayed_attenuated_echo_is_an_echo_path_despite_word_gaps():
    for delay_ms in (30, 50, 80, 150):
        far = speechlike(200)
        delay = 16 * delay_ms
        near = np.zeros_like(far)
        near[delay:] = (far[:-delay] * 0.5).astype(np.int16)  # -6 dB
        ep = EchoPath()
        assert all(run(ep, near, far))
        # the echo of each word's end counts too: the VAD's guard is built on this estimate
        assert -7 < ep.coupling_db < -5, (delay_ms, ep.coupling_db)


def test_no_echo_is_detected_after_a_second_of_playback_and_user_speech_does_not_undo_it():
    far = speechlike(200)
    near = (rng.standard_normal(len(far)) * 3).astype(np.int16)  # the room's noise only
    ep = EchoPath()
    decisions = run(ep, near[:512 * 40], far[:512 * 40])  # a window is 16 blocks of playback and its tail
    assert decisions[:31] == [True] * 31 and decisions[31] is False  # echo assumed until two windows say no
    user = near.copy()
    user[512 * 40:512 * 120] = speechlike(80) * 2  # the user talks over the reply, louder than it
    assert not any(run(ep, user[512 * 40:], far[512 * 40:]))


def test_a_reference_in_doubt_shows_the_path_but_never_its_absence():
    """While the playback's stamps are in doubt (they just jumped: a stalled speaker), the
    reference may not be what played: a mismatch then is no evidence that the echo is gone.
    (On the slow machine the path was judged gone mid-reply, and the engine cut in on itself.)"""
    far = speechlike(200)
    delay = 16 * 50
    near = np.zeros_like(far)
    near[delay:] = (far[:-delay] * 0.5).astype(np.int16)
    wrong = np.roll(far, 512 * 7)  # the reference 0.2 s off what played
    ep = EchoPath()
    assert all(run(ep, near[:512 * 40], far[:512 * 40]))  # seen
    assert all(run(ep, near, wrong, trusted=False)) and ep.releases == 0
    assert not all(run(ep, near, wrong)) and ep.releases == 1  # trusted, the same blocks say "gone"
    # a path only assumed (never seen) goes on the usual evidence: headphones from the start
    ep = EchoPath()
    assert not all(run(ep, near, wrong, trusted=False)) and ep.releases == 1
    ep = EchoPath()
    ep.present = False  # headphones, then the echo appears while the stamps are in doubt: seen
    assert run(ep, near[:512 * 40], far[:512 * 40], trusted=False)[-1]
    assert ep.delays and abs(ep.delays[-1] - delay) <= 1  # and where it sits


def test_an_echo_that_appears_mid_session_is_seen_within_a_window():
    """Headphones unplugged: the energy of the no-echo windows must not hide the new echo."""
    far = speechlike(400)
    near = (rng.standard_normal(len(far)) * 3).astype(np.int16)
    ep = EchoPath()
    assert not any(run(ep, near[:512 * 200], far[:512 * 200])[40:])  # headphones for 6 s
    delay = 16 * 50
    echo = near.copy()
    echo[512 * 200 + delay:] += (far[512 * 200:-delay] * 0.5).astype(np.int16)
    decisions = run(ep, echo[512 * 200:], far[512 * 200:])
    assert decisions.index(True) <= 16 and all(decisions[16:])
    assert -7 < ep.coupling_db < -5  # from the echo's windows only


def test_silent_playback_teaches_nothing():
    ep = EchoPath()
    z = np.zeros(512 * 50, np.int16)
    assert all(run(ep, speechlike(50), z)) and ep.coupling_db is None
