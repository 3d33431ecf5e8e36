"""SequenceState: text deltas, stop strings, logprobs and finish reasons of one sequence."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.gateway.sequence import MIN_LOGPROB, SequenceState
from services.gateway.tokenization import Tokenizer
from shared import wire


@dataclass
class Options:
    """The text options of a request (sequence.TextOptions), as a test sets them."""

    stops: list[str] = field(default_factory=list)
    top_logprobs: int | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True

    def stop_strings(self) -> list[str]:
        return self.stops

    def num_top_logprobs(self) -> int | None:
        return self.top_logprobs


def ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer._hf.encode(text, add_special_tokens=False))


def out(rid: str, tokens: list[int], **kw: object) -> wire.RequestOutput:
    return wire.RequestOutput(rid, tokens, **kw)  # type: ignore[arg-type]


def test_streams_text_and_finishes_with_the_coordinator_reason(tokenizer: Tokenizer) -> None:
    seq = SequenceState(0, "r-0", tokenizer, [], Options())
    tokens = ids(tokenizer, "Hi 😀!")
    deltas = [seq.process(out("r-0", [t])) for t in tokens[:-1]]
    last = seq.process(out("r-0", tokens[-1:], finish_reason="length"))
    assert "".join(d.text for d in deltas) + last.text == "Hi 😀!"
    assert last.finish_reason == "length" and seq.finish_reason == "length"
    assert seq.num_tokens == len(tokens) and seq.finished and not seq.stopped_by_string


def test_stop_string_truncates_and_marks_the_sequence(tokenizer: Tokenizer) -> None:
    seq = SequenceState(0, "r-0", tokenizer, [], Options([" world"]))
    texts = [seq.process(out("r-0", [t])).text for t in ids(tokenizer, "hello world again")]
    assert "".join(texts) == "hello"
    assert seq.text == "hello"
    assert seq.finish_reason == "stop" and seq.stopped_by_string
    # Outputs that arrive after the stop are ignored.
    assert seq.process(out("r-0", ids(tokenizer, " more"))).text == ""


def test_error_and_abort_outputs_become_errors(tokenizer: Tokenizer) -> None:
    failed = SequenceState(0, "a", tokenizer, [], Options())
    delta = failed.process(out("a", [], finish_reason="error", error="stage 1 died"))
    assert delta.error == "stage 1 died" and failed.finished
    aborted = SequenceState(0, "b", tokenizer, [], Options())
    assert aborted.process(out("b", [], finish_reason="abort")).error is not None


def test_logprobs_carry_token_text_bytes_and_top_candidates(tokenizer: Tokenizer) -> None:
    seq = SequenceState(0, "r", tokenizer, [], Options(top_logprobs=1))
    emoji = ids(tokenizer, "😀")
    head, tail = emoji[:-1], emoji[-1]
    assert head  # the emoji spans several tokens
    firsts = [wire.TokenLogprob(t, -0.5, 1, [wire.TopLogprob(t, -0.5)]) for t in head]
    last = wire.TokenLogprob(tail, float("-inf"), 3, [wire.TopLogprob(100, -0.1)] * 3)
    d1 = seq.process(out("r", head, logprobs=firsts))
    # The emoji is incomplete: no text yet, so its logprobs wait for the text.
    assert d1.text == "" and d1.logprobs == []
    d2 = seq.process(out("r", [tail], logprobs=[last], finish_reason="stop"))
    assert d2.text == "😀"
    assert [e.sampled.logprob for e in d2.logprobs] == [-0.5] * len(head) + [MIN_LOGPROB]
    assert b"".join(bytes(e.sampled.bytes) for e in d2.logprobs) == "😀".encode()
    assert {len(e.top) for e in d2.logprobs} == {1}  # cut to top_logprobs
    assert seq.logprobs == d2.logprobs


def test_a_refused_request_is_the_clients_fault(tokenizer: Tokenizer) -> None:
    refused = SequenceState(0, "a", tokenizer, [], Options())
    delta = refused.process(out("a", [], finish_reason="error", error="top_k", invalid=True))
    assert delta.error == "top_k" and delta.invalid
    failed = SequenceState(0, "b", tokenizer, [], Options())
    assert not failed.process(out("b", [], finish_reason="error", error="stage died")).invalid


def test_the_token_that_stopped_the_sequence_is_left_out_of_the_text(
    tokenizer: Tokenizer,
) -> None:
    seq = SequenceState(0, "r", tokenizer, [], Options())
    hello, dot = ids(tokenizer, "Hello"), ids(tokenizer, ".")
    text = seq.process(out("r", hello)).text
    last = seq.process(out("r", dot, finish_reason="stop", stop_reason=dot[0]))
    assert text + last.text == "Hello" and seq.token_ids == hello + dot
    assert last.finish_reason == "stop"


def test_eos_is_left_out_of_the_text(tokenizer: Tokenizer) -> None:
    seq = SequenceState(0, "r", tokenizer, [], Options())
    assert tokenizer.eos_token_id is not None
    seq.process(out("r", ids(tokenizer, "Hi") + [tokenizer.eos_token_id], finish_reason="stop"))
    assert seq.text == "Hi"


def test_include_stop_str_in_output_keeps_the_stop_token_text(tokenizer: Tokenizer) -> None:
    seq = SequenceState(0, "r", tokenizer, [], Options(include_stop_str_in_output=True))
    dot = ids(tokenizer, ".")
    seq.process(out("r", ids(tokenizer, "Hello") + dot, finish_reason="stop", stop_reason=dot[0]))
    assert seq.text == "Hello."


def test_skip_special_tokens_false_keeps_special_tokens_in_the_text(tokenizer: Tokenizer) -> None:
    special = ids(tokenizer, "<|im_start|>")
    assert len(special) == 1
    tokens = ids(tokenizer, "a") + special + ids(tokenizer, "b")
    kept = SequenceState(0, "r", tokenizer, [], Options(skip_special_tokens=False))
    kept.process(out("r", tokens, finish_reason="length"))
    assert kept.text == "a<|im_start|>b"
    skipped = SequenceState(0, "r", tokenizer, [], Options())
    skipped.process(out("r", tokens, finish_reason="length"))
    assert skipped.text == "ab"
