"""Command classes on pydantic-settings: truth words, per-part environment, help metadata."""

from __future__ import annotations

import pytest

from services.ops.command_settings import (
    CommandSettings,
    declaring_class,
    is_boolean,
    truth_words,
)
from services.ops.service_commands import GatewayCommand, StageCommand
from services.stage.settings import StageSettings
from shared.engine_settings import EngineSettings
from shared.settings import TransportSettings

BOOLS = {"enable-prefix-caching", "standby"}


def test_truth_words_become_the_flag_or_its_negation() -> None:
    argv = ["--standby", "false", "--enable-prefix-caching=1", "--dtype", "bfloat16"]
    assert truth_words(argv, BOOLS) == [
        "--no-standby",
        "--enable-prefix-caching",
        "--dtype",
        "bfloat16",
    ]


def test_a_bare_flag_and_other_words_are_left_alone() -> None:
    argv = ["--standby", "--dtype", "false", "--standby=maybe", "--no-standby"]
    assert truth_words(argv, BOOLS) == argv


def test_optional_booleans_are_flags_too() -> None:
    assert is_boolean(EngineSettings.model_fields["enforce_eager"])
    assert is_boolean(EngineSettings.model_fields["enable_prefix_caching"])
    assert not is_boolean(EngineSettings.model_fields["block_size"])


def test_help_groups_a_field_under_the_class_that_declares_it() -> None:
    assert declaring_class(GatewayCommand, "hwm") is TransportSettings
    title, env = GatewayCommand.field_help("hwm")
    assert title == "Socket options shared by all services" and env == "LAYERBUS_HWM"
    assert StageCommand.field_help("layers")[1] == "LAYERBUS_STAGE_LAYERS"


def test_a_part_keeps_its_values_and_what_was_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERBUS_STAGE_LAYERS", "0:4")
    monkeypatch.setenv("LAYERBUS_SEED", "5")
    command = StageCommand(hwm=3)
    stage = command.part(StageSettings)
    assert type(stage) is StageSettings and stage.layers == "0:4"
    assert command.part(EngineSettings).seed == 5
    transport = command.part(TransportSettings)
    assert transport.hwm == 3 and transport.model_fields_set == {"hwm"}


def test_a_command_without_parts_or_prefix_reads_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Tool(CommandSettings):
        """A test command."""

        target: str = ""

    monkeypatch.setenv("TARGET", "from-env")
    assert Tool().target == ""
