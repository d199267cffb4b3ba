"""``camlens study``: create (from world v2 and its nets), invite, results; usage errors exit 2."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from camlens.cli import main
from camlens.study import StudyStore

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["study", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_create_invite_answer_results(tmp_path: Path, capsys) -> None:
    db = tmp_path / "study.sqlite"
    code, out, err = run(capsys, "create", "class-discrimination", "--data",
                         "synthetic:seed=7,n=6,kind=two", "--model", "synthetic:vgg",
                         "--methods", "guided-backprop,guided-gradcam", "--pairs", "4",
                         "--ratings", "2", "--seed", "3", "--db", str(db))
    assert code == 0, err
    assert "8 trials (2 images x 4 conditions)" in out
    assert "8 participants give every trial 2 ratings" in out
    admin = re.search(r"admin token: (\S+)", out).group(1)
    store = StudyStore(db)
    assert store.is_admin(admin) and store.study.methods == ("guided-backprop",
                                                             "guided-gradcam")
    trials = store.trials()
    assert len(trials) == 8 and len({t.photo for t in trials}) == 2
    for t in trials:  # the visualised category is one of the two options, the other the other
        assert {lab for _, lab in t.options} == {t.meta["category"], t.meta["other"]}
        assert dict(t.options)[t.answer] == t.meta["category"]
        png = store.file_for(None, t.panels[0])
        assert png.startswith(b"\x89PNG") and png != store.file_for(None, t.photo)
    code, out, err = run(capsys, "invite", "--db", str(db), "--n", "2", "--base-url",
                         "http://example.test:9/")
    links = out.split()
    assert code == 0 and len(links) == 2 and "2 participant link(s) added" in err
    assert all(re.fullmatch(r"http://example\.test:9/study/p/[A-Za-z0-9_-]{22}", u)
               for u in links)
    who = store.participant(links[0].rsplit("/", 1)[1])
    while (trial := store.next_trial(who)) is not None:
        store.submit(who, trial.id, "0")
    code, out, err = run(capsys, "results", "--db", str(db), "--csv", str(tmp_path / "r.csv"),
                         "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert "| Guided Grad-CAM | " in out and "61.23%" in out and "44.44%" in out
    assert "2 participants invited, 1 started, 1 finished; 2 responses" in out
    assert len(list(csv.DictReader((tmp_path / "r.csv").open()))) == 2
    assert (tmp_path / "r.json").read_text().startswith("{")


def test_create_trust(tmp_path: Path, capsys) -> None:
    db = tmp_path / "trust.sqlite"
    code, out, err = run(capsys, "create", "trust", "--data", "synthetic:seed=11,n=16",
                         "--model-a", "synthetic:vgg", "--model-b", "synthetic:alexnet",
                         "--images", "3", "--db", str(db))
    assert code == 0, err
    store = StudyStore(db)
    trials = store.trials()
    assert store.study.kind == "trust" and len(trials) == 6
    assert store.study.config["model_a"] == "synthetic:vgg"
    for t in trials:
        assert t.answer in ("1", "2") and len(t.panels) == 2
        assert t.caption == f"Predicted category: {t.meta['category']}"
    # balanced A/B order: per method, model A is model 1 in 1 or 2 of the 3 trials
    for m in store.study.methods:
        assert sum(t.answer == "1" for t in trials if t.method == m) in (1, 2)


@pytest.mark.parametrize("argv,message", [
    (["create", "class-discrimination", "--data", "synthetic:seed=1,n=3,kind=two",
      "--pairs", "3"], "must be a positive even number"),
    (["create", "class-discrimination", "--data", "synthetic:seed=1,n=3,kind=two",
      "--pairs", "8"], "3 image(s) with exactly two annotated categories"),
    (["create", "class-discrimination", "--data", "synthetic:seed=1,n=2",
      "--pairs", "2"], "0 image(s) with exactly two"),
    (["create", "class-discrimination", "--data", "synthetic:seed=1,n=2,kind=two",
      "--methods", "nosuch"], "unknown method(s) ['nosuch']"),
    (["create", "class-discrimination", "--data", "nosuch:x"], "unknown dataset spec"),
    (["create", "class-discrimination", "--data", "synthetic:seed=1,n=2,kind=two",
      "--pairs", "0"], "expected a positive integer"),
    (["create", "trust", "--data", "synthetic:seed=1,n=2", "--model-a", "synthetic:vgg"],
     "--model-b"),
])
def test_create_usage_errors_exit_2(tmp_path: Path, capsys, argv: list[str],
                                    message: str) -> None:
    code, out, err = run(capsys, *argv, "--db", str(tmp_path / "s.sqlite"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "s.sqlite").exists()


def test_database_errors_exit_2(tmp_path: Path, capsys) -> None:
    existing = tmp_path / "there.sqlite"
    existing.write_bytes(b"")
    code, _, err = run(capsys, "create", "class-discrimination", "--data",
                       "synthetic:seed=1,n=2,kind=two", "--db", str(existing))
    assert code == 2 and "already exists" in err
    code, _, err = run(capsys, "create", "class-discrimination", "--data",
                       "synthetic:seed=1,n=2,kind=two", "--db", str(tmp_path / "no/s.sqlite"))
    assert code == 2 and "does not exist" in err
    for action in (["invite", "--n", "1"], ["results"]):
        code, _, err = run(capsys, *action, "--db", str(tmp_path / "missing.sqlite"))
        assert code == 2 and "no study database" in err
        code, _, err = run(capsys, *action, "--db", str(existing))
        assert code == 2 and "holds no study" in err
    code, _, err = run(capsys, "invite", "--db", str(existing), "--n", "0")
    assert code == 2 and "positive integer" in err
