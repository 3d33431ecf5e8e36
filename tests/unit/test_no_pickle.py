"""The wire trusts no one: no code in the tree may unpickle or evaluate received data."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("services", "shared", "benchmark", "deploy")

# Each pattern names a way to turn received bytes into code or arbitrary objects.
FORBIDDEN = {
    "pickle": re.compile(r"^\s*(import|from)\s+(c?pickle|cloudpickle|dill|marshal|shelve)\b", re.M),
    "pickle call": re.compile(r"\b(c?pickle|cloudpickle|dill|marshal)\.(loads?|Unpickler)\b"),
    "recv_pyobj": re.compile(r"\b(recv|send)_pyobj\b"),
    "torch.load": re.compile(r"\btorch\.load\b"),
    "eval/exec": re.compile(r"(?<![.\w])(eval|exec)\s*\("),
    "numpy allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
}


def offending_lines(text: str) -> list[str]:
    found = []
    for name, pattern in FORBIDDEN.items():
        for match in pattern.finditer(text):
            line = text[: match.start()].count("\n") + 1
            found.append(f"{name} at line {line}")
    return found


def test_the_patterns_catch_what_they_must() -> None:
    assert offending_lines("import pickle\n")
    assert offending_lines("x = pickle.loads(b)\n")
    assert offending_lines("msg = sock.recv_pyobj()\n")
    assert offending_lines("t = torch.load(buf)\n")
    assert offending_lines("eval(frame)\n")
    assert not offending_lines("model.eval()\n# unpickled nowhere\n")


def test_no_unpickling_or_eval_in_the_source_tree() -> None:
    problems = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for problem in offending_lines(path.read_text()):
                problems.append(f"{path.relative_to(ROOT)}: {problem}")
    assert not problems, "\n".join(problems)
