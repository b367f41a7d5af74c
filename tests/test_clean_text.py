"""clean_text: what untrusted text (scraped fields, LLM answers) becomes before it reaches a record."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from dishgen.data.records import clean_lines, clean_text


def test_escapes_controls_and_invisible_characters_are_removed():
    assert clean_text("Sar\x00ma \x1b[1;31mcrvena\x1b[0m\r\n\t kupus\u202e ") == "Sarma crvena kupus"
    assert clean_text("\x1b]0;owned\x07Gibanica\x1b\\") == "Gibanica"  # OSC title sequence, whole
    assert clean_text("pa\u00adsulj\ufeff \x7f\x9b2Jok") == "pasulj ok"
    assert clean_text("lone \ud800 surrogate") == "lone surrogate"
    assert clean_text(None) == "" and clean_text(42) == "42"


def test_nfc_and_length_bound():
    assert clean_text("C\u0301evapi") == "\u0106evapi"  # decomposed Ć becomes one code point
    assert clean_text("kupus " * 100, 30) == "kupus kupus kupus kupus kupus"
    assert clean_text("x" * 100, 10) == "x" * 10
    assert clean_lines(["  a ", "\x00", "b\x1b[0m"]) == ["a", "b"]
    assert clean_lines([f"line {i}" for i in range(500)], max_lines=3) == ["line 0", "line 1", "line 2"]
    assert clean_lines("one line") == ["one line"] and clean_lines(None) == []


HOSTILE = st.lists(st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=20),  # surrogates included
    st.sampled_from(["\x1b[", "\x1b[31m", "\x1b]0;", "\x07", "\x1b\\", "\x00", "\u202e", "e\u0301",
                     "\r\n", "\t", " ", "\x9b", "\ufeff"]),
), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(HOSTILE, st.integers(1, 200))
def test_clean_text_output_is_always_clean(text, max_len):
    out = clean_text(text, max_len)
    assert len(out) <= max_len
    assert out == out.strip() and "  " not in out
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in out)
    assert "\x1b" not in out and "\x00" not in out
    assert unicodedata.is_normalized("NFC", out)
    json.dumps(out, ensure_ascii=False).encode("utf-8")  # always writable as a UTF-8 JSON line
    assert clean_text(out, max_len) == out  # idempotent
