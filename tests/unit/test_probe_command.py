"""`layerbus probe`: this CPU's capacity as JSON that `layerbus plan --stages` reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services import cli


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def test_probes_feed_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for name, memory in (("big", "1.0"), ("small", "0.25")):
        code, out, err = run(
            ["probe", "--name", name, "--memory-gb", memory, "--dtype", "float32"], capsys
        )
        assert code == 0
        offer = json.loads(out)
        assert offer["name"] == name and offer["memory_gb"] == float(memory)
        assert offer["device"].startswith("cpu")
        assert 0 < offer["decode_ms"] < offer["prefill_ms"]
        assert f"--memory-gb {memory.rstrip('0').rstrip('.')}" in err
        path = tmp_path / f"{name}.json"
        path.write_text(out)
        files += ["--stages", str(path)]
    code, out, _ = run(["plan", "--dtype", "float32", "--json", *files], capsys)
    assert code == 0
    plan = json.loads(out)
    # 0.25 GiB holds at most 15 of the bundled model's 16.5 MiB layers (KV for 2048 tokens).
    spans = {c["name"]: c["layers"] for c in plan["chain"]}
    assert set(spans) <= {"big", "small"} and "big" in spans
    assert all(c["memory_gb"] <= c["memory_cap_gb"] for c in plan["chain"])


def test_unknown_settings_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["probe", "--layers", "0:3"], capsys)
    assert code == 2
    assert "unknown setting(s) ['layers']" in err
