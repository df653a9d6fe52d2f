"""The § 3.7 word coder at its boundaries, where random streams rarely go: the range of a
stored initial state, and a push that lands exactly on the renormalisation bound."""

from __future__ import annotations

import numpy as np
import pytest

from ddformat.codecs import rans


def _first_state(words: list[int]) -> rans.Lockstep:
    w = np.array(words, np.int64)
    return rans.Lockstep(np, w, np.array([0]), np.array([len(w)]))


@pytest.mark.parametrize("state,bad", [
    (2**31 - 1, True), (2**31, False), (2**63 - 1, False), (2**31 + 5, False), (5, True)])
def test_a_stream_must_start_in_the_state_range(state, bad):
    assert bool(_first_state([state & 0xFFFFFFFF, state >> 32]).bad[0]) is bad


def test_a_stream_whose_high_word_puts_it_past_two_to_the_63_is_refused():
    assert bool(_first_state([0, 2**31]).bad[0])
    assert bool(_first_state([0, 2**32 - 1]).bad[0])


def test_a_push_landing_exactly_on_the_emit_bound_emits_a_word_and_decodes_back():
    # Pushing a symbol of frequency 2^7 onto 2^31 gives 2^48 = 2^9 · 2^39: the next push, of a
    # symbol of frequency 2^9, sits exactly on the bound x ≥ f·2^39 and must emit first.
    rows = [np.array([0, 2**7, 2**24]), np.array([0, 2**9, 2**24])]
    tables = rans.Tables(rows)
    starts = np.array([[0], [0]])
    freq = np.array([[2**9], [2**7]])  # decoding order: the 2^9 symbol first
    (stream,) = rans.encode(starts, freq, np.ones((2, 1), bool))
    words = np.frombuffer(stream, "<u4").astype(np.int64)
    assert len(words) == 3  # the final state and one emitted word
    lockstep = rans.Lockstep(np, words, np.array([0]), np.array([len(words)]))
    for row in (1, 0):
        assert lockstep.pop(tables.keyed, np.array([tables.starts[row]]), 3).tolist() == [0]
    assert not lockstep.failed()[0]
