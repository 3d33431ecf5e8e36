"""The context-length rule: a prompt plus its completion fit in max_model_len.

One function for the gateway (400 context_length_exceeded), the coordinator's
check of every Generate and its engine thread.
"""

from __future__ import annotations


def context_length_error(prompt_len: int, max_tokens: int | None, max_model_len: int) -> str | None:
    """Why prompt_len tokens plus max_tokens to generate do not fit, or None if they do.

    max_tokens None means "as many as fit": the prompt must leave room for one token.
    """
    if prompt_len < max_model_len and (
        max_tokens is None or prompt_len + max_tokens <= max_model_len
    ):
        return None
    wanted = (
        f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, "
        f"{max_tokens} for the completion)"
        if max_tokens
        else f"{prompt_len} prompt tokens"
    )
    return (
        f"This model's maximum context length is {max_model_len} tokens; the request "
        f"needs {wanted}, which exceeds max_model_len. Shorten the prompt or lower max_tokens."
    )
