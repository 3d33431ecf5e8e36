"""Gateway settings: LAYERBUS_* environment variables, keyword overrides or CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.default_model import default_model_path
from shared.settings import TransportSettings


class GatewaySettings(TransportSettings):
    """Configuration of one gateway process; built once at start-up, then read-only."""

    # hide_input_in_errors: a validation error must not echo API keys into logs.
    model_config = SettingsConfigDict(
        env_prefix="LAYERBUS_", extra="ignore", hide_input_in_errors=True
    )

    host: str = Field(default="127.0.0.1", description="HTTP listen address")
    port: int = Field(
        default=8000, ge=0, le=65535, description="HTTP listen port (0 = any free port)"
    )
    coordinator: str = Field(
        default="tcp://127.0.0.1:5555", description="ZeroMQ address of the coordinator's ROUTER"
    )
    model: str = Field(
        default_factory=lambda: str(default_model_path()),
        description="HF model folder; the gateway loads its tokenizer and chat template",
    )
    served_model_name: str | None = Field(
        default=None, description="model name clients send and see (default: the model folder name)"
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="accepted API keys, comma-separated in the environment; empty = no auth",
    )
    max_body_bytes: int = Field(default=4 << 20, gt=0, description="largest accepted request body")
    max_running_requests: int = Field(
        default=256, gt=0, description="requests in flight to the coordinator at once"
    )
    max_queued_requests: int = Field(
        default=1024, ge=0, description="requests waiting in the gateway for a running slot"
    )
    max_queued_prompt_tokens: int = Field(
        default=2_000_000, ge=0, description="estimated prompt tokens waiting in the gateway queue"
    )
    max_concurrency_per_key: int = Field(
        default=0, ge=0, description="running + queued requests per API key (0 = unlimited)"
    )
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After seconds on 429/503")
    max_n: int = Field(default=16, gt=0, description="largest accepted `n` (choices per request)")
    status_interval_s: float = Field(
        default=1.0, gt=0, description="seconds between coordinator status polls"
    )
    status_timeout_s: float = Field(
        default=2.0, gt=0, description="seconds to wait for one status reply"
    )
    coordinator_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="coordinator silent this long: /health is 503 and in-flight requests fail",
    )
    request_timeout_s: float = Field(
        default=600.0, gt=0, description="a request with no new output for this long fails"
    )
    tokenizer_threads: int = Field(default=2, gt=0, description="threads for templating/tokenizing")
    generation_config: str = Field(
        default="auto",
        description="sampling defaults: auto = the model's generation_config.json, "
        "vllm = vLLM's neutral defaults, or a folder holding a generation_config.json",
    )
    chat_template: str | None = Field(
        default=None, description="a Jinja chat template file replacing the model's template"
    )
    enable_auto_tool_choice: bool = Field(
        default=False,
        description="let the model choose tool calls (tool_choice auto); needs --tool-call-parser",
    )
    tool_call_parser: str | None = Field(
        default=None, description="vLLM tool-call parser that extracts tool calls (e.g. hermes)"
    )
    log_level: str = Field(default="info", description="uvicorn log level")
    access_log: bool = Field(
        default=False, description="log every HTTP request (uvicorn access log)"
    )
    protect_metrics: bool = Field(
        default=False, description="/metrics needs an API key too (/status always does)"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _check_model_folder(self) -> GatewaySettings:
        if not Path(self.model).is_dir():
            raise ValueError(
                f"model folder {self.model!r} does not exist; set LAYERBUS_MODEL or --model "
                "to a Hugging Face model folder"
            )
        return self

    @model_validator(mode="after")
    def _check_tools(self) -> GatewaySettings:
        if self.chat_template is not None and not Path(self.chat_template).is_file():
            raise ValueError(
                f"chat template file {self.chat_template!r} does not exist (--chat-template)"
            )
        if self.enable_auto_tool_choice and not self.tool_call_parser:
            raise ValueError("--enable-auto-tool-choice needs --tool-call-parser NAME")
        return self

    def chat_template_text(self) -> str | None:
        """The --chat-template file's text, or None for the model's own template."""
        if self.chat_template is None:
            return None
        return Path(self.chat_template).read_text()

    @property
    def model_name(self) -> str:
        """The name clients use in `model`."""
        return self.served_model_name or Path(self.model).name
