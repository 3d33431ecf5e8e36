"""vLLM's GrammarOutput <-> wire.GrammarMask, with vLLM's own GrammarOutput type."""

from __future__ import annotations

import dataclasses

import msgspec
import numpy as np
import pytest
from vllm.v1.core.sched.output import GrammarOutput

from shared import wire
from shared.vllm_bridge.grammar_codec import grammar_output_from_mask, mask_from_grammar_output


def test_vllms_grammar_output_has_the_fields_the_codec_reads() -> None:
    names = [f.name for f in dataclasses.fields(GrammarOutput)]
    assert names[:2] == ["structured_output_request_ids", "grammar_bitmask"], (
        "vLLM's GrammarOutput(structured_output_request_ids, grammar_bitmask): "
        "grammar_codec builds it positionally and reads both fields"
    )


def test_a_bitmask_survives_the_wire_bit_for_bit() -> None:
    bitmask = np.array([[-1, 0, 7], [1 << 30, -(1 << 31), 5]], dtype=np.int32)
    mask = mask_from_grammar_output(GrammarOutput(["r1", "r2"], bitmask))
    # It travels inside a StepPlan (msgpack); decode it as the stage does.
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(mask), type=wire.GrammarMask)
    out = grammar_output_from_mask(again)
    assert isinstance(out, GrammarOutput)
    assert out.structured_output_request_ids == ["r1", "r2"]
    assert out.grammar_bitmask.dtype == np.int32
    np.testing.assert_array_equal(out.grammar_bitmask, bitmask)


def test_masks_that_do_not_match_their_shape_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        mask_from_grammar_output(GrammarOutput(["r"], np.zeros(3, dtype=np.int32)))
    short = wire.GrammarMask(req_ids=["r1", "r2"], bitmask=b"\0" * 4, rows=1, words=1)
    with pytest.raises(wire.WireError, match="for 2 requests"):
        grammar_output_from_mask(short)
    wrong = wire.GrammarMask(req_ids=["r1"], bitmask=b"\0" * 6, rows=1, words=2)
    with pytest.raises(wire.WireError, match="holds 6 bytes"):
        grammar_output_from_mask(wrong)
