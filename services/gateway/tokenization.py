"""The model's HF tokenizer: chat templates and encoding off the event loop, token texts."""

from __future__ import annotations

import asyncio
import copy
import functools
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from transformers import AutoTokenizer, PreTrainedTokenizerBase

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class TemplateError(ValueError):
    """The chat template rejected the messages; raised in a tokenizer thread."""


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: printable stand-in character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class Tokenizer:
    """The model's HF tokenizer: decoding on the event loop, encoding in its own threads.

    Each pool thread owns a private copy: HF fast tokenizers are not safe to
    share across threads.
    """

    def __init__(self, model_path: str, threads: int = 2, chat_template: str | None = None) -> None:
        self._hf: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(model_path)
        if chat_template is not None:
            # --chat-template replaces the model's template, as in `vllm serve`.
            self._hf.chat_template = chat_template
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=threads,
            thread_name_prefix="tokenizer",
            initializer=self._init_thread,
        )
        backend = getattr(self._hf, "backend_tokenizer", None)
        self._byte_level = backend is not None and "ByteLevel" in repr(backend.decoder)
        self.eos_token_id: int | None = self._hf.eos_token_id
        self.vocab_size = len(self._hf)

    def _init_thread(self) -> None:
        self._local.tok = copy.deepcopy(self._hf)

    def _thread_tokenizer(self) -> PreTrainedTokenizerBase:
        tok: PreTrainedTokenizerBase = self._local.tok
        return tok

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ thread pool

    async def encode_chat(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Render the chat template (with `tools`, if any) and tokenize, in the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self._encode_chat_sync, messages, add_generation_prompt, tools
        )

    async def encode_text(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Tokenize a completion prompt (with the tokenizer's special tokens), in the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, self._encode_text_sync, text, add_special_tokens
        )

    def _encode_chat_sync(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        tok = self._thread_tokenizer()
        try:
            text = tok.apply_chat_template(
                messages,
                tools=list(tools) if tools else None,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except Exception as err:  # jinja raises many types; all mean "bad messages"
            raise TemplateError(f"chat template failed: {err}") from err
        if not isinstance(text, str):
            raise TemplateError("chat template did not render to a string")
        # The template already placed BOS and friends.
        return list(tok.encode(text, add_special_tokens=False))

    def _encode_text_sync(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._thread_tokenizer().encode(text, add_special_tokens=add_special_tokens))

    # ------------------------------------------------------------ event loop

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of token ids without special tokens."""
        return cast(str, self._hf.decode(list(token_ids), skip_special_tokens=True))

    def decode_all(self, token_ids: Sequence[int]) -> str:
        """Text of token ids, special tokens included (vLLM's /detokenize)."""
        return cast(str, self._hf.decode(list(token_ids)))

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """The vocabulary entries of token ids (vLLM's /tokenize token_strs)."""
        return [str(t) for t in self._hf.convert_ids_to_tokens(list(token_ids))]

    @property
    def hf(self) -> PreTrainedTokenizerBase:
        """The underlying HF tokenizer, for vLLM's tool parsers (read-only use)."""
        return self._hf

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one Tokenizer per process
    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes a token contributes to the output."""
        piece = self._hf.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            if self._byte_level:
                table = _byte_level_decoder()
                if all(ch in table for ch in piece):
                    return bytes(table[ch] for ch in piece)
            match = _BYTE_TOKEN.match(piece)
            if match:
                return bytes([int(match.group(1), 16)])
        return cast(str, self._hf.decode([token_id], skip_special_tokens=False)).encode()

    @functools.lru_cache(maxsize=65536)  # noqa: B019 - one Tokenizer per process
    def token_text(self, token_id: int) -> str:
        """A token as a string for logprobs; partial UTF-8 shown as \\xNN escapes."""
        return self.token_bytes(token_id).decode("utf-8", errors="backslashreplace")
