"""The `layerbus` command line: switches and `layerbus keys generate`."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main, parse_flags
from shared.curve import load_key_pair, load_public_key


def test_a_switch_may_stand_alone() -> None:
    flags = parse_flags(["--insecure", "--bind", "tcp://0.0.0.0:0"], frozenset({"insecure"}))
    assert flags == {"insecure": "true", "bind": "tcp://0.0.0.0:0"}
    assert parse_flags(["--insecure", "false"], frozenset({"insecure"})) == {"insecure": "false"}
    with pytest.raises(SystemExit, match="needs a value"):
        parse_flags(["--bind"])


def test_keys_generate_writes_a_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["keys", "generate", str(tmp_path), "--name", "stage-a"])
    pair = load_key_pair(tmp_path / "stage-a.key_secret")
    assert load_public_key(tmp_path / "stage-a.key") == pair.public
    assert "stage-a.key_secret" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already exists"):
        main(["keys", "generate", str(tmp_path), "--name", "stage-a"])
    with pytest.raises(SystemExit, match="usage"):
        main(["keys", "generate", str(tmp_path)])
