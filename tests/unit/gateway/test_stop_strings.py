"""StopStringMatcher: truncation at the earliest stop, hold-back of partial matches."""

from __future__ import annotations

import pytest

from services.gateway.stop_strings import StopStringMatcher


@pytest.mark.parametrize(
    ("stops", "deltas", "emitted", "text", "stopped"),
    [
        # no stops: everything passes through immediately
        ([], ["ab", "cd"], ["ab", "cd"], "abcd", False),
        # stop inside one delta
        (["STOP"], ["hello STOP world"], ["hello "], "hello ", True),
        # stop split across deltas: the partial "ST" is held back, never sent
        (["STOP"], ["hello ST", "OP world"], ["hello ", ""], "hello ", True),
        # a partial match that turns out not to be a stop is released later
        (["STOP"], ["a ST", "ART"], ["a ", "START"], "a START", False),
        # earliest of several stops wins
        (["world", "lo"], ["hello world"], ["hel"], "hel", True),
        # stop at the very start
        (["\n"], ["\nrest"], [""], "", True),
        # after stopping, later text is ignored
        (["x"], ["axb", "ccc"], ["a", ""], "a", True),
        # multi-character unicode stop split across deltas
        (["你好"], ["说你", "好吗"], ["说", ""], "说", True),
    ],
)
def test_stop_strings(
    stops: list[str], deltas: list[str], emitted: list[str], text: str, stopped: bool
) -> None:
    matcher = StopStringMatcher(stops)
    out = [matcher.push(d) for d in deltas]
    assert out == emitted
    assert matcher.text == text
    assert matcher.stopped is stopped


def test_final_push_releases_held_back_partial_match() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.push("end ST") == "end "
    assert matcher.push("", final=True) == "ST"
    assert matcher.text == "end ST" and not matcher.stopped


def test_emitted_text_never_contains_the_stop_string() -> None:
    text = "one two three four five"
    for size in range(1, 6):
        matcher = StopStringMatcher(["three"])
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        out = "".join(matcher.push(c) for c in chunks)
        assert out == "one two "


@pytest.mark.parametrize(
    ("stops", "deltas", "emitted", "text"),
    [
        (["STOP"], ["hello STOP world"], ["hello STOP"], "hello STOP"),
        # nothing is held back: a kept stop is output either way
        (["STOP"], ["hello ST", "OP world"], ["hello ST", "OP"], "hello STOP"),
        # the stop that ends first wins (vLLM), not the one that starts first
        (["lo wor", "lo"], ["hello world"], ["hello"], "hello"),
    ],
)
def test_include_stop_str_in_output_keeps_the_stop_and_cuts_after_it(
    stops: list[str], deltas: list[str], emitted: list[str], text: str
) -> None:
    matcher = StopStringMatcher(stops, keep_stop=True)
    assert [matcher.push(d) for d in deltas] == emitted
    assert matcher.text == text and matcher.stopped and matcher.keeps_stop
