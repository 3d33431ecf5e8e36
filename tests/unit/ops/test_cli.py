"""`layerbus` command line: flag parsing, boolean flags, help text, serve forwarding."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.coordinator.settings import CoordinatorSettings
from services.ops import cli
from shared.engine_settings import EngineSettings

BOOLS = frozenset({"enable_prefix_caching", "standby"})


def test_name_value_pairs_and_equals_form() -> None:
    flags = cli.parse_flags(["--dtype", "bfloat16", "--max-model-len=1024"], BOOLS)
    assert flags == {"dtype": "bfloat16", "max_model_len": "1024"}


def test_bare_boolean_flag_means_true() -> None:
    flags = cli.parse_flags(["--enable-prefix-caching", "--dtype", "bfloat16"], BOOLS)
    assert flags == {"enable_prefix_caching": "true", "dtype": "bfloat16"}


def test_negated_boolean_flag_means_false() -> None:
    assert cli.parse_flags(["--no-enable-prefix-caching"], BOOLS) == {
        "enable_prefix_caching": "false"
    }


def test_boolean_flag_takes_a_following_truth_word() -> None:
    assert cli.parse_flags(["--standby", "false", "--enable-prefix-caching=0"], BOOLS) == {
        "standby": "false",
        "enable_prefix_caching": "0",
    }


def test_boolean_at_the_end_of_the_line() -> None:
    assert cli.parse_flags(["--dtype", "auto", "--standby"], BOOLS)["standby"] == "true"


def test_non_boolean_flag_without_value_is_an_error() -> None:
    with pytest.raises(SystemExit, match="--dtype needs a value"):
        cli.parse_flags(["--dtype"], BOOLS)


def test_no_prefix_of_a_non_boolean_is_an_unknown_name() -> None:
    assert cli.parse_flags(["--no-dtype", "x"], BOOLS) == {"no_dtype": "x"}


def test_bare_boolean_builds_true_setting() -> None:
    [engine] = cli.build([EngineSettings], cli.parse_flags(["--no-enable-prefix-caching"], BOOLS))
    assert engine.enable_prefix_caching is False


def test_help_never_prints_pydantic_undefined(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "coordinator", "stage", "gateway"):
        cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "PydanticUndefined" not in out, command
        assert "--max-model-len" in out or command == "gateway"


def test_help_marks_boolean_flags(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["coordinator", "--help"])
    assert "--[no-]enable-prefix-caching" in capsys.readouterr().out


def test_required_setting_says_so() -> None:
    from services.stage.settings import StageSettings

    assert "--layers" in cli.describe([StageSettings])
    assert "(required)" in cli.describe([StageSettings]).splitlines()[0]


def test_help_shows_default_factory_values() -> None:
    assert "(default 300.0)" in cli.describe([CoordinatorSettings])


def test_serve_forwards_engine_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def fake_serve(settings, engine, forwarded, metrics_capable):  # type: ignore[no-untyped-def]
        seen.update(settings=settings, engine=engine, forwarded=forwarded)
        return 0

    monkeypatch.setattr("services.ops.launcher.serve", fake_serve)
    argv = ["--dtype", "bfloat16", "--max-model-len", "1024", "--stages", "3"]
    argv += ["--no-enable-prefix-caching", "--step-timeout-s", "30", "--max-n", "4"]
    assert cli.serve(argv) == 0
    forwarded = seen["forwarded"]
    assert isinstance(forwarded, dict)
    for child in ("coordinator", "stage"):
        assert forwarded[child]["dtype"] == "bfloat16"
        assert forwarded[child]["max_model_len"] == "1024"
        assert forwarded[child]["enable_prefix_caching"] == "false"
    assert forwarded["coordinator"]["step_timeout_s"] == "30"
    assert "step_timeout_s" not in forwarded["stage"]
    assert forwarded["gateway"] == {"max_n": "4"}
    assert seen["engine"].max_model_len == 1024  # type: ignore[attr-defined]
    assert seen["settings"].stages == 3  # type: ignore[attr-defined]


def test_serve_refuses_unknown_flag() -> None:
    with pytest.raises(SystemExit, match="--no-such-thing"):
        cli.serve(["--no-such-thing", "1"])


def test_serve_refuses_a_value_a_child_would_refuse() -> None:
    with pytest.raises(SystemExit, match="max_n"):
        cli.serve(["--max-n", "zero"])


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


def test_metrics_port_defaults_to_on_and_help_says_where(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shared.settings import TransportSettings

    assert TransportSettings().metrics_port is None  # the service's default port, not off
    cli.main(["stage", "--help"])
    assert "coordinator 9100, stage 9101" in capsys.readouterr().out


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
