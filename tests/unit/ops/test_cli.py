"""`layerbus` command line: flags, boolean flags, environment variables, help, errors, serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ops import cli
from services.ops.command_settings import CliUsageError, CommandSettings
from shared.engine_settings import EngineSettings
from shared.settings import TransportSettings


@pytest.fixture()
def ran(monkeypatch: pytest.MonkeyPatch) -> list[CommandSettings]:
    """The command objects `layerbus coordinator|stage` would have run, instead of running."""
    seen: list[CommandSettings] = []
    for command in (cli.CoordinatorCommand, cli.StageCommand):
        monkeypatch.setattr(command, "cli_cmd", seen.append)
    return seen


def engine_of(argv: list[str], ran: list[CommandSettings]) -> EngineSettings:
    cli.main(argv)
    return ran[-1].part(EngineSettings)


def test_name_value_pairs_and_equals_form(ran: list[CommandSettings]) -> None:
    engine = engine_of(["coordinator", "--dtype", "bfloat16", "--max-model-len=1024"], ran)
    assert (engine.dtype, engine.max_model_len) == ("bfloat16", 1024)


def test_bare_boolean_flag_means_true_and_negated_means_false(ran: list[CommandSettings]) -> None:
    assert (
        engine_of(["coordinator", "--no-enable-prefix-caching"], ran).enable_prefix_caching is False
    )  # noqa: E501
    assert engine_of(["coordinator", "--enable-prefix-caching"], ran).enable_prefix_caching is True
    assert engine_of(["coordinator", "--enforce-eager", "--seed", "3"], ran).enforce_eager is True
    assert engine_of(["coordinator"], ran).enforce_eager is None  # unset: the platform decides


def test_boolean_flag_takes_a_truth_word(ran: list[CommandSettings]) -> None:
    for argv in (["--enable-prefix-caching", "false"], ["--enable-prefix-caching=0"]):
        assert engine_of(["coordinator", *argv], ran).enable_prefix_caching is False
    engine = engine_of(["coordinator", "--no-enable-prefix-caching", "--enforce-eager=yes"], ran)
    assert engine.enforce_eager is True and engine.enable_prefix_caching is False


def test_a_boolean_refuses_a_word_that_is_not_one(ran: list[CommandSettings]) -> None:
    with pytest.raises(CliUsageError, match="--enable-prefix-caching"):
        cli.main(["coordinator", "--enable-prefix-caching=maybe"])


def test_non_boolean_flag_without_value_is_an_error(ran: list[CommandSettings]) -> None:
    with pytest.raises(CliUsageError, match="--dtype: expected one argument") as refused:
        cli.main(["coordinator", "--dtype"])
    assert refused.value.code == 2


def test_no_prefix_of_a_non_boolean_is_an_unknown_name(ran: list[CommandSettings]) -> None:
    with pytest.raises(CliUsageError, match=r"unknown setting\(s\) \['no_dtype'\]"):
        cli.main(["coordinator", "--no-dtype", "x"])
    assert not ran


def test_each_part_reads_its_own_environment_variables(
    ran: list[CommandSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAYERBUS_STAGE_LAYERS", "3:9")
    monkeypatch.setenv("LAYERBUS_MAX_MODEL_LEN", "512")
    monkeypatch.setenv("LAYERBUS_HWM", "7")
    monkeypatch.setenv("LAYERBUS_LAYERS", "0:1")  # not a stage variable: ignored
    cli.main(["stage", "--hwm", "9"])
    from services.stage.settings import StageSettings

    stage = ran[-1].part(StageSettings)
    assert stage.layers == "3:9"
    assert ran[-1].part(EngineSettings).max_model_len == 512
    assert ran[-1].part(TransportSettings).hwm == 9  # the flag wins over the variable


def test_a_bad_value_names_the_flag_and_its_variable(ran: list[CommandSettings]) -> None:
    with pytest.raises(CliUsageError) as refused:
        cli.main(["coordinator", "--max-model-len", "long"])
    assert "--max-model-len (LAYERBUS_MAX_MODEL_LEN): Input should be a valid integer" in str(
        refused.value
    )
    assert "'long'" in str(refused.value)


def test_a_stage_without_layers_is_left_to_placement(
    ran: list[CommandSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.stage.settings import StageSettings

    monkeypatch.delenv("LAYERBUS_STAGE_LAYERS", raising=False)
    cli.main(["stage", "--memory-gb", "0.5"])
    stage = ran[-1].part(StageSettings)
    assert (stage.layers, stage.memory_gb) == ("", 0.5)


def test_a_bad_environment_value_names_the_variable(
    ran: list[CommandSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAYERBUS_HEARTBEAT_MISSES", "many")
    with pytest.raises(CliUsageError, match=r"LAYERBUS_HEARTBEAT_MISSES.*'many'"):
        cli.main(["coordinator"])


def test_gateway_errors_do_not_echo_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.GatewayCommand, "cli_cmd", lambda self: None)
    with pytest.raises(CliUsageError) as refused:
        cli.main(["gateway", "--api-keys", "sk-secret", "--max-n", "zero"])
    assert "--max-n" in str(refused.value) and "zero" not in str(refused.value)


def help_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_never_prints_pydantic_undefined(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "coordinator", "stage", "gateway"):
        out = help_of([command], capsys)
        assert "PydanticUndefined" not in out and "default factory" not in out, command
        assert "--max-model-len" in out or command == "gateway"


def test_help_marks_boolean_flags_and_names_variables(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(help_of(["coordinator"], capsys).split())
    assert "--enable-prefix-caching, --no-enable-prefix-caching" in out
    assert "[env: LAYERBUS_ENABLE_PREFIX_CACHING]" in out
    assert "(default: 300.0) [env: LAYERBUS_CONFIGURE_TIMEOUT_S]" in out


def test_stage_help_says_who_sets_the_layers(capsys: pytest.CaptureFixture[str]) -> None:
    out = " ".join(help_of(["stage"], capsys).split())
    assert "--layers str layer range START:END (END exclusive), e.g. 0:15" in out
    assert "the coordinator places this stage from its measured capacity" in out
    assert "[env: LAYERBUS_STAGE_LAYERS]" in out


def test_help_shows_default_factory_values(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.default_model import default_model_path

    out = " ".join(help_of(["gateway"], capsys).split())
    assert f"(default: {default_model_path()})" in out.replace("- ", "-")


def test_serve_help_lists_what_it_forwards(capsys: pytest.CaptureFixture[str]) -> None:
    out = help_of(["serve"], capsys)
    assert "forwarded to the coordinator" in out and "forwarded to the gateway" in out
    assert "--step-timeout-s float" in out and "--max-n int" in out
    assert "--layers" not in out  # the launcher sets it


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    seen: dict[str, object] = {}

    def fake_serve(settings, engine, forwarded, metrics_capable):  # type: ignore[no-untyped-def]
        seen.update(settings=settings, engine=engine, forwarded=forwarded)
        return 0

    monkeypatch.setattr("services.ops.launcher.serve", fake_serve)
    return seen


def test_serve_forwards_engine_flags(served: dict[str, object]) -> None:
    argv = ["serve", "--dtype", "bfloat16", "--max-model-len", "1024", "--stages", "3"]
    argv += ["--no-enable-prefix-caching", "--step-timeout-s", "30", "--max-n", "4"]
    cli.main(argv)
    forwarded = served["forwarded"]
    assert isinstance(forwarded, dict)
    for child in ("coordinator", "stage"):
        assert forwarded[child]["dtype"] == "bfloat16"
        assert forwarded[child]["max_model_len"] == "1024"
        assert forwarded[child]["enable_prefix_caching"] == "false"
    assert forwarded["coordinator"]["step_timeout_s"] == "30"
    assert "step_timeout_s" not in forwarded["stage"]
    assert forwarded["gateway"] == {"max_n": "4"}
    assert served["engine"].max_model_len == 1024  # type: ignore[attr-defined]
    assert served["settings"].stages == 3  # type: ignore[attr-defined]


def test_serve_takes_boolean_words_and_forwards_them_as_flags(served: dict[str, object]) -> None:
    cli.main(["serve", "--standby", "--async-runner", "false", "--access-log=yes"])
    forwarded = served["forwarded"]
    assert isinstance(forwarded, dict)
    assert served["settings"].standby is True  # type: ignore[attr-defined]
    assert forwarded["stage"]["async_runner"] == "false"
    assert forwarded["gateway"]["access_log"] == "true"


def test_serve_refuses_unknown_flag(served: dict[str, object]) -> None:
    with pytest.raises(SystemExit, match="--no-such-thing"):
        cli.main(["serve", "--no-such-thing", "1"])
    assert not served


def test_serve_refuses_a_value_a_child_would_refuse(served: dict[str, object]) -> None:
    with pytest.raises(SystemExit, match="max_n"):
        cli.main(["serve", "--max-n", "zero"])
    assert not served


def test_keys_generate_writes_a_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shared.curve import load_key_pair, load_public_key

    cli.main(["keys", "generate", str(tmp_path), "--name", "stage-a"])
    pair = load_key_pair(tmp_path / "stage-a.key_secret")
    assert load_public_key(tmp_path / "stage-a.key") == pair.public
    assert "stage-a.key_secret" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already exists"):
        cli.main(["keys", "generate", str(tmp_path), "--name", "stage-a"])
    with pytest.raises(SystemExit, match="usage"):
        cli.main(["keys", "generate", str(tmp_path)])


def test_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CliUsageError, match="invalid choice: 'stages'"):
        cli.main(["stages"])


def test_no_command_prints_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "prometheus-targets" in out and "LAYERBUS_*" in out


def test_health_target_from_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    probed: list[tuple[str, str]] = []

    def probe(target: str, stage: str) -> str:
        probed.append((target, stage))
        return ""

    monkeypatch.setattr("services.ops.health_probe.probe", probe)
    monkeypatch.setenv("LAYERBUS_HEALTH_TARGET", "tcp://c:5555")
    monkeypatch.setenv("LAYERBUS_HEALTH_STAGE", "stage-0-3")
    with pytest.raises(SystemExit) as done:
        cli.main(["health"])
    assert done.value.code == 0 and probed == [("tcp://c:5555", "stage-0-3")]
    with pytest.raises(SystemExit):
        cli.main(["health", "http://g:8000"])
    assert probed[-1] == ("http://g:8000", "stage-0-3")


def test_metrics_port_defaults_to_on_and_help_says_where(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert TransportSettings().metrics_port is None  # the service's default port, not off
    assert "coordinator 9100, stage 9101" in " ".join(help_of(["stage"], capsys).split())


def test_prometheus_targets_without_a_gateway_prints_usage() -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["prometheus-targets"])
    assert stopped.value.code == 2


def test_prometheus_targets_names_an_unreachable_gateway(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["prometheus-targets", "http://127.0.0.1:9/"])
    assert stopped.value.code == 1
    assert "no /status from http://127.0.0.1:9/" in capsys.readouterr().err


def test_every_child_command_line_of_serve_parses_as_given(
    served: dict[str, object], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What `layerbus serve` forwards reaches each child's settings with the value given."""
    from services.ops.serve_plan import ServePlan, plan_children

    argv = ["serve", "--dtype", "float32", "--no-async-runner", "--insecure=true"]
    argv += ["--step-timeout-s", "30", "--max-n", "4", "--api-keys", "k1,k2", "--kv-cache-gb", "1"]
    cli.main(argv)
    forwarded = served["forwarded"]
    assert isinstance(forwarded, dict)
    shape = ServePlan(
        model=str(tmp_path),
        ranges=[(0, 15), (15, 30)],
        coordinator_address="tcp://127.0.0.1:5555",
        host="127.0.0.1",
        port=8000,
        kv_cache_gb=0.5,
        metrics_port=9100,
        cpus=[0, 1],
    )
    children = plan_children(shape, forwarded, {"coordinator", "stage"})
    seen: list[CommandSettings] = []
    for command in (cli.CoordinatorCommand, cli.StageCommand, cli.GatewayCommand):
        monkeypatch.setattr(command, "cli_cmd", seen.append)
    for child in children:
        cli.main(child.args)
    coordinator, stage, _, gateway = seen
    from services.coordinator.settings import CoordinatorSettings
    from services.gateway.settings import GatewaySettings
    from services.stage.settings import StageSettings

    assert coordinator.part(CoordinatorSettings).step_timeout_s == 30.0
    assert coordinator.part(TransportSettings).insecure is True
    assert coordinator.part(TransportSettings).metrics_port == 9100
    assert stage.part(StageSettings).async_runner is False
    assert stage.part(StageSettings).kv_cache_gb == 1.0
    assert stage.part(StageSettings).layers == "0:15"
    assert stage.part(EngineSettings).dtype == "float32"
    assert stage.part(TransportSettings).metrics_port == 9101
    gateway_settings = gateway.part(GatewaySettings)
    assert gateway_settings.api_keys == ["k1", "k2"] and gateway_settings.max_n == 4
    assert gateway_settings.model == str(tmp_path) and gateway_settings.insecure is True
