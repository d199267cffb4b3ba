"""Every command line of README.md's ```bash blocks runs.

Each line is split at ``&&``; each command is then

- run in-process through `camlens.cli.main` (``camlens ...`` and ``python -m camlens ...``),
  in a scratch folder, with small settings where the README's own command allows them
  (``--input-size 96`` for `explain`, ``--limit 4`` for a synthetic `evaluate`, 6 training
  scenes and 2 steps for `segment`), and its
  promised outputs checked;
- or, when it names input files that do not exist here (the README's placeholders such as
  photo.jpg or vgg16.pth), run all the same: it must fail cleanly on the missing input (exit 2,
  one line, no traceback), never on its arguments, so the command line itself is valid;
- or skipped with the reason: installing packages (the environment under test is installed
  already) and running this very test suite.

A command the README documents but camlens rejects is marked xfail(strict=True), so the mark
has to go when camlens is fixed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import camlens.models
from camlens.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OUTPUT_FLAGS = {"--out", "--csv"}
FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pth", ".pt", ".txt", ".json", ".py", ".csv",
                 ".npz", ".xml")
ARGUMENT_ERRORS = ("unrecognized arguments", "no such option", "invalid choice", "usage:",
                   "--help)", "arguments are required", "expected one argument")
KNOWN_BROKEN: dict[str, tuple] = {
    # name: (predicate on the command, reason) for a README command known to fail; empty now
}


@dataclass(frozen=True)
class Command:
    line: int
    text: str
    argv: tuple[str, ...]  # the camlens arguments; empty for a skipped command
    missing: tuple[str, ...]  # input files it names that do not exist
    skip: str = ""


def bash_lines(text: str) -> Iterator[tuple[int, str]]:
    inside = False
    for number, line in enumerate(text.splitlines(), start=1):
        fence = line.strip()
        if fence.startswith("```"):
            inside = fence == "```bash" if not inside else False
            continue
        if inside and line.strip() and not line.strip().startswith("#"):
            yield number, line


def input_path(argv: list[str], i: int) -> str | None:
    """The input file or folder token ``i`` names (``FORMAT:PATH`` read as PATH), if any;
    outputs (--out, --csv) are not inputs."""
    token = argv[i]
    if token.startswith("-") or (i > 0 and argv[i - 1] in OUTPUT_FLAGS):
        return None
    path = token.split(":", 1)[1] if re.match(r"^[a-z_]+:", token) else token
    if not path or "=" in path:
        return None
    return path if path.endswith("/") or path.lower().endswith(FILE_SUFFIXES) else None


def named_inputs(argv: list[str]) -> list[str]:
    return [p for i in range(len(argv)) if (p := input_path(argv, i)) is not None]


def absolute_inputs(argv: list[str]) -> list[str]:
    """Input paths of the repository made absolute: the command runs in a scratch folder."""
    out = []
    for i, token in enumerate(argv):
        path = input_path(argv, i)
        out.append(token if path is None else token[: len(token) - len(path)] + str(ROOT / path))
    return out


def commands() -> list[Command]:
    found = []
    for number, line in bash_lines(README.read_text(encoding="utf-8")):
        tokens = shlex.split(line, comments=True)
        parts: list[list[str]] = [[]]
        for token in tokens:
            if token == "&&":
                parts.append([])
            else:
                parts[-1].append(token)
        for part in parts:
            text = shlex.join(part)
            if part[:1] == ["camlens"]:
                argv = part[1:]
            elif part[:1] in (["python"], ["python3"]) and part[1:3] == ["-m", "camlens"]:
                argv = part[3:]
            elif part[:1] in (["python"], ["python3"]) and part[1:3] == ["-m", "pip"]:
                found.append(Command(number, text, (), (), "installs packages: the environment "
                                     "under test is installed already"))
                continue
            elif part[:1] in (["python"], ["python3"]) and part[1:3] == ["-m", "pytest"]:
                found.append(Command(number, text, (), (), "runs this test suite itself"))
                continue
            elif part[:1] in (["python"], ["python3"]) and part[1:2] == ["-m"] and (
                part[2:3] in (["ruff"], ["mypy"])
            ):
                found.append(Command(number, text, (), (), "a check of the sources: CI runs it"))
                continue
            elif part[:1] in (["python"], ["python3"]) and part[1:4] == ["-m", "mkdocs", "build"]:
                found.append(Command(number, text, (), (), "builds the documentation site: CI "
                                     "runs it (tests/test_docs.py runs its worked examples)"))
                continue
            else:
                raise AssertionError(f"README.md:{number}: no rule for running {text!r}; "
                                     "teach tests/test_readme.py how")
            if argv[:1] == ["serve"]:
                found.append(Command(number, text, tuple(argv), (), "serves until stopped: "
                                     "tests/test_web_load.py runs `camlens serve` and uses it"))
                continue
            missing = tuple(p for p in named_inputs(argv) if not (ROOT / p).exists())
            found.append(Command(number, text, tuple(argv), missing))
    return found


COMMANDS = commands()


def test_ci_runs_the_readme_check_command() -> None:
    """.ci/run runs README.md's second command, step by step (its installs quietly)."""
    ci = []
    for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens == ["bash", ".ci/chromium"]:
            continue  # the system browser for the browser tests, installed with apt-get
        if tokens and tokens[0] not in ("set", "cd"):
            quiet = tokens[1:3] == ["-m", "pip"]
            ci.append(shlex.join([t for t in tokens if not (quiet and t == "-q")]))
    second = [c.text for c in COMMANDS if c.line == sorted({c.line for c in COMMANDS})[1]]
    assert ci == second


def _param(c: Command) -> object:
    marks = []
    for predicate, reason in KNOWN_BROKEN.values():
        if c.argv and predicate(list(c.argv)):
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
    if c.skip:
        marks.append(pytest.mark.skip(reason=c.skip))
    tag = f" [missing: {', '.join(c.missing)}]" if c.missing else ""
    return pytest.param(c, marks=marks, id=f"L{c.line}: {c.text}{tag}")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a loaded machine two OpenMP threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shared_model() -> torch.nn.Module:
    return camlens.models.efficientnet_lite0(pretrained=True)


def small(argv: list[str]) -> list[str]:
    """The README's command with small settings where it leaves them open."""
    out = list(argv)
    if out[:1] == ["explain"] and "--input-size" not in out:
        out += ["--input-size", "96"]
    if out[:1] == ["evaluate"]:
        data = out[out.index("--data") + 1] if "--data" in out else ""
        if data.startswith("synthetic:") and "--limit" not in out:
            out += ["--limit", "4"]
        out += ["--no-progress"]
    if out[:1] == ["segment"]:
        for option, value in (("--train", "synthetic:seed=4200,n=6"),
                              ("--test", "synthetic:seed=20251,n=4"), ("--steps", "2")):
            if option not in out:
                out += [option, value]
    return out


def test_the_readme_has_runnable_commands() -> None:
    ran = [c for c in COMMANDS if not c.skip and not c.missing]
    assert len(ran) >= 5, [c.text for c in ran]
    assert {c.argv[0] for c in ran} >= {"explain", "layers", "methods", "evaluate"}


@pytest.mark.parametrize("command", [_param(c) for c in COMMANDS])
def test_readme_command(command: Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str], shared_model: torch.nn.Module
                        ) -> None:
    monkeypatch.chdir(tmp_path)
    # the bundled model, read once for this file (camlens leaves it untouched)
    monkeypatch.setattr(camlens.models, "efficientnet_lite0",
                        lambda pretrained=True: shared_model)
    code = main(small(absolute_inputs(list(command.argv))))
    out, err = capsys.readouterr()
    if command.missing:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert not any(e in err.lower() for e in ARGUMENT_ERRORS), err
        return
    assert code == 0, err
    check_outputs(list(command.argv), tmp_path, out)


def check_outputs(argv: list[str], cwd: Path, out: str) -> None:
    """What the README promises each command gives."""
    if argv[0] == "explain":
        folder = cwd / (argv[argv.index("--out") + 1] if "--out" in argv else "explanations")
        stems = [a.split(":", 1)[1] for a in argv[1:] if a.startswith("sample:")]
        assert stems
        saves = ",".join(argv[i + 1] for i, a in enumerate(argv) if a == "--save") or "all"
        promised = {"explanation.json"} | {
            f for kind, f in (("maps", "maps.npz"), ("summary", "summary.png"))
            if kind in saves or "all" in saves}
        for stem in stems:
            names = {p.name for p in (folder / stem).iterdir()}
            assert promised <= names and ("maps.npz" in names) == ("maps.npz" in promised), names
        targets = [argv[i + 1] for i, a in enumerate(argv) if a == "--target"]
        if targets:
            with np.load(folder / stems[0] / "maps.npz") as npz:
                classes = {k.split("/")[1] for k in npz.files}
            wanted = {str(camlens.models.imagenet_labels().index(t)) if not t.isdigit() else t
                      for t in targets}
            assert classes == wanted
    elif argv[0] == "layers":
        assert any(line.startswith("*") for line in out.splitlines())  # the default layer
    elif argv[0] == "methods":
        assert all(name in out for name in camlens.METHODS)
    elif argv[0] == "evaluate":
        assert out.lstrip().startswith("| Method |")
    elif argv[0] == "dissect":
        folder = cwd / argv[argv.index("--out") + 1]
        assert {"index.html", "dissection.json", "units.csv"} <= {p.name for p in
                                                                  folder.iterdir()}
