"""MAXMSGSIZE of the sockets that carry steps, from what a legitimate step can hold."""

from __future__ import annotations

# msgpack spends at most 5 bytes on a token id; a step plan carries each
# request's prompt and, for resumed requests, all its tokens: twice the
# longest sequence per request, plus room for ids and sampling parameters.
BYTES_PER_TOKEN_ID = 5
HEADER_SLACK_BYTES = 1 << 20


def step_header_max_bytes(max_num_seqs: int, max_model_len: int) -> int:
    """Largest msgpack Step header (the plan) a legitimate step produces."""
    return max_num_seqs * (2 * max_model_len * BYTES_PER_TOKEN_ID + 4096) + HEADER_SLACK_BYTES


def activation_max_bytes(
    max_num_seqs: int,
    max_model_len: int,
    max_num_batched_tokens: int,
    hidden_size: int,
    itemsize: int,
) -> int:
    """Cap for a socket receiving Steps: hidden states and residual plus the header."""
    tensors = max_num_batched_tokens * hidden_size * itemsize * 2
    return tensors + step_header_max_bytes(max_num_seqs, max_model_len)
