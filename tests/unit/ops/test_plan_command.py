"""`layerbus plan`: stage descriptions in, the planned split out; nothing started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.ops import cli, plan_command

CONFIG = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}


@pytest.fixture()
def model(tmp_path: Path) -> str:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    return str(tmp_path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(["plan", *argv])
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def test_flags_give_a_split_weighted_by_speed(
    model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        [
            "--model", model, "--dtype", "float32", "--kv-tokens", "2048", "--json",
            "--stage", "fast,memory-gb=4,decode-ms=1,prefill-ms=10",
            "--stage", "slow,memory-gb=4,decode-ms=2,prefill-ms=20",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0
    chain = json.loads(out)["chain"]
    assert [c["name"] for c in chain][0] == "fast" or chain[-1]["name"] == "fast"
    sizes = {
        c["name"]: int(c["layers"].split(":")[1]) - int(c["layers"].split(":")[0]) for c in chain
    }
    assert sizes["fast"] > sizes["slow"]
    assert sum(sizes.values()) == 30


def test_a_stages_file_with_a_pinned_stage_prints_a_table(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stages = tmp_path / "stages.json"
    stages.write_text(
        json.dumps(
            {
                "stages": [
                    {"name": "home", "memory_gb": 1, "layers": "0:10"},
                    {"name": "office", "memory-gb": 2},
                    {"name": "laptop", "memory_gb": 2},
                ]
            }
        )
    )
    code, out, _ = run(["--model", model, "--dtype", "float32", "--stages", str(stages)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"plan for {Path(model).name} (30 layers, float32")
    home = next(line for line in lines if line.strip().startswith("home"))
    assert "0:10" in home and "(pinned)" in home
    assert "slowest stage:" in lines[-1]


def test_an_impossible_plan_exits_1_naming_what_is_missing(
    model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["--model", model, "--dtype", "float32", "--stage", "tiny,memory-gb=0.2"], capsys
    )
    assert code == 1
    assert "no placement covers layers" in err and "GiB" in err


def test_speeds_for_some_stages_only_are_refused(
    model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        [
            "--model", model,
            "--stage", "a,memory-gb=4,decode-ms=1,prefill-ms=2",
            "--stage", "b,memory-gb=4",
        ],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "decode-ms is given for some stages but not for b" in err
    code, _, err = run(
        [
            "--model", model,
            "--stage", "a,memory-gb=4,head-ms=3",
            "--stage", "b,memory-gb=4",
        ],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "head-ms is given for some stages but not for b" in err


def test_bad_stage_descriptions_name_the_problem() -> None:
    with pytest.raises(plan_command.PlanInputError, match="expected key=value"):
        plan_command.parse_stage_spec("a,memory-gb")
    with pytest.raises(plan_command.PlanInputError, match="memory-gb missing"):
        plan_command.capacity_of({"name": "a"}, 30)
    with pytest.raises(plan_command.PlanInputError, match="unknown: speed"):
        plan_command.capacity_of({"name": "a", "memory_gb": 1, "speed": 2}, 30)
    with pytest.raises(plan_command.PlanInputError, match="need 0 <= START < END <= 30"):
        plan_command.capacity_of({"name": "a", "memory_gb": 1, "layers": "0:40"}, 30)


def test_no_stages_and_unknown_flags_are_usage_errors(
    model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--model", model], capsys)[0] == 2
    assert run(["--model", model, "--stage"], capsys)[0] == 2
    assert run(["--bogus", "1"], capsys)[0] == 2


def test_a_model_folder_without_a_usable_config_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["--model", str(tmp_path / "none"), "--stage", "a,memory-gb=1"], capsys)
    assert code == 2 and "cannot read the model's config.json (--model)" in err
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    code, _, err = run(["--model", str(tmp_path), "--stage", "a,memory-gb=1"], capsys)
    assert code == 2 and "config.json has no 'num_attention_heads'" in err


def test_help_lists_the_stage_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    assert "head-ms" in out and "--prompt-ratio" in out
