"""The one synthetic data spec, ``synthetic:seed=S,n=N[,kind=K][,start=I][,objects=A-B]
[,cue_rate=R]`` (camlens.synthetic.v2.spec): the parser key by key, the scenes it names against
literal ``make_scene`` calls, the scenes each command used before the spec replaced
``world:N`` / ``world-v2:N`` (pinned), every command end to end with it, and the old spellings
refused with a one-line error and exit 2."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from camlens.cli import main
from camlens.errors import DataSpecError
from camlens.synthetic.v2 import CUE_COLOURS, HELDOUT_SEED, Scene, make_dataset, make_scene
from camlens.synthetic.v2.spec import FORM, KEYS, SyntheticSpec, is_synthetic, parse_synthetic

pytestmark = pytest.mark.usefixtures("one_thread")


def same(a: Sequence[Scene], b: Sequence[Scene]) -> bool:
    """Two scene lists are the same scenes: pixels, kinds, object classes and masks."""
    return len(a) == len(b) and all(
        np.array_equal(x.image, y.image) and x.kind == y.kind
        and [o.label for o in x.objects] == [o.label for o in y.objects]
        and all(np.array_equal(o.mask, p.mask) for o, p in zip(x.objects, y.objects))
        for x, y in zip(a, b))


def rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng((seed, i))


# --------------------------------------------------------------------------------- the parser

def test_every_key_parsed() -> None:
    s = parse_synthetic("synthetic:seed=7,n=3,kind=multi,start=5,objects=1-3,cue_rate=0.25")
    assert s == SyntheticSpec(7, 3, kind="multi", start=5, objects=(1, 3), cue_rate=0.25)
    assert parse_synthetic("synthetic:seed=0,n=1") == SyntheticSpec(0, 1)
    assert parse_synthetic("synthetic:seed=1,n=2,objects=3").objects == (3, 3)
    assert parse_synthetic("synthetic:seed=1,n=2,kind=mixed,objects=2-2").objects == (2, 2)
    assert parse_synthetic("synthetic:seed=1,n=2,cue_rate=1").cue_rate == 1.0
    assert parse_synthetic("synthetic:seed=1,n=2,cue_rate=0").cue_rate == 0.0
    for kind in ("single", "multi", "two", "pair", "mixed"):
        assert parse_synthetic(f"synthetic:seed=1,n=2,kind={kind}").kind == kind
    # written back in KEYS order, defaults left out: parse(str(s)) == s
    assert str(s) == "synthetic:seed=7,n=3,kind=multi,start=5,objects=1-3,cue_rate=0.25"
    assert parse_synthetic(str(s)) == s and str(SyntheticSpec(1, 2)) == "synthetic:seed=1,n=2"
    assert KEYS == ("seed", "n", "kind", "start", "objects", "cue_rate")


def test_whitespace_and_case_of_the_prefix() -> None:
    want = SyntheticSpec(7, 3, kind="two", start=1)
    assert parse_synthetic("  synthetic: seed = 7 ,n=3 , kind= two,start =1  ") == want
    assert parse_synthetic("Synthetic:seed=7,n=3,kind=two,start=1") == want
    assert parse_synthetic("synthetic:\tseed=7,\tn=3,kind=two,start=1\n") == want
    assert is_synthetic(" synthetic:seed=1,n=2") and is_synthetic("synthetic:n=2")
    assert not is_synthetic("synthetic:/data/scenes") and not is_synthetic("world:200")


@pytest.mark.parametrize("text, why", [
    ("synthetic:seed=1", "give n="),
    ("synthetic:n=1", "give seed="),
    ("synthetic:kind=two", "give seed= and n="),
    ("synthetic:seed=1,n=2,seed=3", "seed given twice"),
    ("synthetic:seed=1,n=2,n=2", "n given twice"),
    ("synthetic:seed=1,n=2,kind=two,kind=two", "kind given twice"),
    ("synthetic:seed=1,n=2,m=3", "unknown key 'm'; keys are seed, n, kind, start, objects, "
                                 "cue_rate"),
    ("synthetic:seed=1,n=2,Seed=3", "unknown key 'Seed'"),
    ("synthetic:seed=1,n=2,size=64", "unknown key 'size'"),
    ("synthetic:seed=1,n=2,multi", "expected KEY=VALUE, got 'multi'"),
    ("synthetic:seed=1,,n=2", "empty KEY=VALUE"),
    ("synthetic:seed=1,n=2,", "empty KEY=VALUE"),
    ("synthetic:seed=1,n=0", "n must be an integer >= 1, got '0'"),
    ("synthetic:seed=1,n=-2", "n must be an integer >= 1, got '-2'"),
    ("synthetic:seed=1,n=2.5", "n must be an integer >= 1, got '2.5'"),
    ("synthetic:seed=1,n=", "n must be an integer >= 1, got ''"),
    ("synthetic:seed=1,n=1_000", "n must be an integer >= 1, got '1_000'"),
    ("synthetic:seed=-1,n=2", "seed must be an integer >= 0, got '-1'"),
    ("synthetic:seed=x,n=2", "seed must be an integer >= 0, got 'x'"),
    ("synthetic:seed=1,n=2,start=-1", "start must be an integer >= 0, got '-1'"),
    ("synthetic:seed=1,n=2,kind=crowd", "kind must be one of single, multi, two, pair, mixed, "
                                        "got 'crowd'"),
    ("synthetic:seed=1,n=2,kind=Single", "kind must be one of"),
    ("synthetic:seed=1,n=2,objects=0-2", "objects must be A-B (or A) with 1 <= A <= B <= 33"),
    ("synthetic:seed=1,n=2,objects=3-2", "objects must be A-B"),
    ("synthetic:seed=1,n=2,objects=1-34", "objects must be A-B"),
    ("synthetic:seed=1,n=2,objects=two", "objects must be A-B"),
    ("synthetic:seed=1,n=2,kind=single,objects=2", "objects applies to multi and mixed scenes, "
                                                  "not kind=single"),
    ("synthetic:seed=1,n=2,kind=two,objects=2", "not kind=two"),
    ("synthetic:seed=1,n=2,cue_rate=1.5", "cue_rate must be a number in [0, 1], got '1.5'"),
    ("synthetic:seed=1,n=2,cue_rate=-0.1", "cue_rate must be a number in [0, 1]"),
    ("synthetic:seed=1,n=2,cue_rate=nan", "cue_rate must be a number in [0, 1], got 'nan'"),
    ("synthetic:seed=1,n=2,cue_rate=high", "cue_rate must be a number in [0, 1]"),
])
def test_bad_specs_name_the_problem_and_the_form(text: str, why: str) -> None:
    with pytest.raises(DataSpecError) as info:
        parse_synthetic(text)
    msg = str(info.value)
    assert msg.startswith(f"bad data spec {text!r}: ")
    assert msg.endswith(f"; synthetic data is written {FORM} (docs/world.md)")
    assert why in msg and "\n" not in msg and isinstance(info.value, ValueError)


@pytest.mark.parametrize("text", ["world:200", "world-v2:8", "world-v2", "world:16,seed=3",
                                  "coco:x.json", "synthetic:", "200", ""])
def test_other_forms_are_unknown_data_specs(text: str) -> None:
    with pytest.raises(DataSpecError) as info:
        parse_synthetic(text)
    assert str(info.value) == (f"unknown data spec {text!r}; synthetic data is written "
                               f"{FORM} (docs/world.md)")
    assert FORM.startswith("synthetic:seed=S,n=N[,")


# ----------------------------------------------------------------------- the scenes it names

def test_scenes_are_make_scene_of_seed_and_index() -> None:
    s = parse_synthetic("synthetic:seed=11,n=3,kind=multi,start=4,objects=1-2,cue_rate=1")
    want = [make_scene(rng(11, i), kind="multi", n_objects=(1, 2), cue_rate=1.0)
            for i in (4, 5, 6)]
    assert same(s.scenes(), want) and s.ids() == ["11/00004", "11/00005", "11/00006"]
    assert all(1 <= len(x.objects) <= 2 and x.background["cue"] in CUE_COLOURS
               for x in s.scenes())
    # a scene depends on neither n nor start: scene 5 alone is the second of start=4
    assert same([SyntheticSpec(11, 1, kind="multi", start=5, objects=(1, 2),
                               cue_rate=1.0).scene(0)], want[1:2])
    assert same(parse_synthetic("synthetic:seed=3,n=4").scenes(), make_dataset(4, 3))
    assert same(parse_synthetic("synthetic:seed=3,n=2,kind=pair").scenes(),
                make_dataset(2, 3, kind="pair"))
    with pytest.raises(IndexError):
        s.scene(3)


def test_mixed_cycles_kinds_by_scene_index_and_defaults_fill_only_gaps() -> None:
    s = parse_synthetic("synthetic:seed=5,n=5,kind=mixed,start=2")
    assert [x.kind for x in s.scenes()] == ["pair", "multi", "single", "two", "pair"]
    base = SyntheticSpec(5, 2)
    assert base.with_defaults().kind == "single" and base.with_defaults().objects == (2, 4)
    assert base.with_defaults(kind="mixed", objects=(1, 4)) == SyntheticSpec(
        5, 2, kind="mixed", objects=(1, 4))
    given = SyntheticSpec(5, 2, kind="two", objects=(3, 3))
    assert given.with_defaults(kind="mixed", objects=(1, 4)) == given
    assert base.limited(1).n == 1 and base.limited(9).n == 2 and base.limited(None) is base


# ------------------------------- pins: each command's default scenes are the ones it used before

def test_pin_evaluate_and_diagnose_and_study_scenes() -> None:
    """``load_dataset`` / ``load_items`` on ``synthetic:seed=S,n=N[,kind=K][,cue_rate=R]``
    (spelling unchanged): the scenes of ``make_dataset(N, S, kind=K, cue_rate=R)``, ids
    ``S/00000``... as before."""
    from camlens.diagnose.data import load_items
    from camlens.evaluate.datasets import load_dataset

    old = [make_scene(rng(HELDOUT_SEED, i), kind="two") for i in range(3)]
    got = load_dataset(f"synthetic:seed={HELDOUT_SEED},n=3,kind=two")
    assert [s.image_id for s in got] == [f"{HELDOUT_SEED}/0000{i}" for i in range(3)]
    assert all(np.array_equal(s.pixels, o.image) for s, o in zip(got, old))
    old_cue = [make_scene(rng(HELDOUT_SEED, i), kind="single", cue_rate=0.33) for i in range(3)]
    items = load_items(f"synthetic:seed={HELDOUT_SEED},n=3,cue_rate=0.33")
    assert same([it.scene for it in items], old_cue)
    assert [it.id for it in items] == [f"{HELDOUT_SEED}/0000{i}" for i in range(3)]
    assert same([it.scene for it in load_items(f"synthetic:seed={HELDOUT_SEED},n=9", limit=2)],
                [make_scene(rng(HELDOUT_SEED, i)) for i in range(2)])


def test_pin_captioning_scenes() -> None:
    """word-pointing / region-ratio (and camlens.captioning.report's default data): kind
    default ``mixed``, the captioner's held-out scenes ``scene(20251, i)`` as before."""
    from camlens.captioning.train import scene
    from camlens.evaluate.tasks.captioning import caption_scenes

    cycle = ("single", "two", "pair", "multi")
    old = [make_scene(rng(HELDOUT_SEED, i), kind=cycle[i % 4]) for i in range(6)]
    assert same(caption_scenes(f"synthetic:seed={HELDOUT_SEED},n=6"), old)
    assert same(caption_scenes(f"synthetic:seed={HELDOUT_SEED},n=6,kind=mixed"), old)
    assert same(caption_scenes(f"synthetic:seed={HELDOUT_SEED},n=9", limit=6), old)
    assert same([scene(HELDOUT_SEED, i) for i in range(6)], old)
    assert same(caption_scenes(f"synthetic:seed={HELDOUT_SEED},n=2,kind=two"),
                make_dataset(2, HELDOUT_SEED, kind="two"))


def test_pin_vqa_scenes(monkeypatch: pytest.MonkeyPatch) -> None:
    """``camlens evaluate vqa --data world:N`` is now ``synthetic:seed=20251,n=N`` and
    ``camlens vqa world:I`` is ``synthetic:seed=20251,n=1,start=I``: the VQA data's scenes
    (multi, 1-4 objects) as before, and the same question per scene."""
    import camlens.vqa.measure as measure
    from camlens.cli.vqa import _images
    from camlens.vqa.data import make_scenes

    old = [make_scene(rng(HELDOUT_SEED, i), kind="multi", n_objects=(1, 4)) for i in range(5)]
    assert same(make_scenes(5, HELDOUT_SEED), old)
    assert same(make_scenes(2, HELDOUT_SEED, start=3), old[3:])
    seen: list[tuple[Scene, Any]] = []
    monkeypatch.setattr(measure, "pick_question",
                        lambda s, g: seen.append((s, g.integers(1 << 30))))
    monkeypatch.setattr(measure, "summarize", lambda rows, **kw: len(rows))
    assert measure.evaluate_spec(f"synthetic:seed={HELDOUT_SEED},n=5", progress=False) == 5
    assert same([s for s, _ in seen], old)
    assert [q for _, q in seen] == [rng(HELDOUT_SEED, i).integers(1 << 30) for i in range(5)]
    photos = _images(f"synthetic:seed={HELDOUT_SEED},n=1,start=3")
    assert [stem for _, stem in photos] == [f"synthetic_{HELDOUT_SEED}_00003"]
    assert np.array_equal(np.asarray(photos[0][0]), old[3].image)


def test_pin_dissect_scenes() -> None:
    """``camlens dissect --data world-v2:N`` is now ``synthetic:seed=20252,n=N``: the same
    single scenes, the same data name in dissection.json (the shipped ones say it)."""
    from camlens.cli.dissect import concept_data
    from camlens.dissect import DISSECT_SEED, WorldV2Concepts

    data = concept_data(f"synthetic:seed={DISSECT_SEED},n=3", None, None, None, None)
    old = [make_scene(rng(DISSECT_SEED, i), kind="single") for i in range(3)]
    assert len(data) == 3 and all(np.array_equal(data[i].picture, old[i].image)
                                  for i in range(3))
    part = old[1].concepts["part"]
    assert np.array_equal(data[1].labels["part"][0] > 0, part > 0)
    assert data.name == "world v2 (3 single scenes, seed 20252)" == WorldV2Concepts(3).name
    assert WorldV2Concepts(1).name == "world v2 (1 single scene, seed 20252)"
    shipped = json.loads((Path(__file__).parents[1] / "src/camlens/dissect/shipped/vgg.json")
                         .read_text())
    assert shipped["data"] == WorldV2Concepts(f"synthetic:seed={DISSECT_SEED},n=500").name


def test_pin_segment_scenes() -> None:
    """``camlens segment --n-train N --n-test M --kind K`` is now ``--train
    synthetic:seed=4200,n=N[,kind=K] --test synthetic:seed=20251,n=M[,kind=K]`` (kind default
    multi): the defaults name the scenes it used (``make_dataset(800, 4200, kind="multi")``,
    ``make_dataset(300, 20251, ...)``), with the same exact label maps."""
    from camlens.cli import build_parser
    from camlens.segment import TEST, TRAIN, make_data

    args = build_parser().parse_args(["segment"])
    assert parse_synthetic(args.train) == TRAIN == SyntheticSpec(4200, 800, kind="multi")
    assert parse_synthetic(args.test) == TEST == SyntheticSpec(HELDOUT_SEED, 300, kind="multi")
    for seed, kind in ((4200, "multi"), (HELDOUT_SEED, "multi"), (4200, "pair")):
        old = [make_scene(rng(seed, i), kind=kind) for i in range(3)]
        data = make_data(f"synthetic:seed={seed},n=3" + ("" if kind == "multi" else
                                                          f",kind={kind}"))
        assert np.array_equal((data.images * 255).round().byte().numpy(),
                              np.stack([s.image for s in old]).transpose(0, 3, 1, 2))
        assert data.labels == [s.labels for s in old]
        for truth, s in zip(data.truth.numpy(), old):   # 0 background, c + 1 on object c
            want = np.zeros(s.image.shape[:2], dtype=np.int64)
            for k, o in enumerate(s.objects):
                want[s.concepts["object"] == k + 1] = o.label + 1
            assert np.array_equal(truth, want) and (truth > 0).any()


# ---------------------------------------------------------------- each command end to end

def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_vqa_explains_each_scene_of_a_spec(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "vqa", f"synthetic:seed={HELDOUT_SEED},n=2,start=16",
                         "-q", "How many animals are there?", "--top", "1", "--save", "json",
                         "--out", str(tmp_path))
    assert code == 0, err
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == [f"synthetic_{HELDOUT_SEED}_00016", f"synthetic_{HELDOUT_SEED}_00017"]
    assert out.count("Q: How many animals are there?") == 2


def test_cli_evaluate_vqa_and_word_pointing_take_the_spec(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "vqa.csv"
    code, out, err = run(capsys, "evaluate", "vqa", "--data",
                         f"synthetic:seed={HELDOUT_SEED},n=1,start=2", "--csv", str(csv),
                         "--window", "56", "--stride", "56", "--no-progress")
    assert code == 0, err
    assert csv.read_text().splitlines()[1].startswith(f"scene{HELDOUT_SEED}-2,")
    code, out, err = run(capsys, "evaluate", "word-pointing", "--data",
                         f"synthetic:seed={HELDOUT_SEED},n=1,kind=single", "--no-progress")
    assert code == 0 and "|" in out, err


def test_cli_evaluate_localization_with_start_kind_and_objects(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "loc.csv"
    code, _, err = run(capsys, "evaluate", "localization", "--data",
                       "synthetic:seed=20251,n=1,start=7,kind=multi,objects=1-2",
                       "--model", "synthetic:vgg_gap", "--csv", str(csv), "--no-progress")
    assert code == 0, err
    ids = {line.split(",")[0] for line in csv.read_text().splitlines()[1:]}
    assert ids == {"20251/00007"}


# ------------------------------------------------------------- the old spellings are refused

@pytest.mark.parametrize("argv, spec", [
    (["vqa", "world:16", "-q", "How many animals are there?"], "world:16"),
    (["evaluate", "vqa", "--data", "world:200"], "world:200"),
    (["evaluate", "vqa", "--data", "world:20,seed=3"], "world:20,seed=3"),
    (["evaluate", "word-pointing", "--data", "world:3"], "world:3"),
    (["dissect", "--model", "synthetic:alexnet", "--data", "world-v2:8", "--out", "OUT"],
     "world-v2:8"),
    (["dissect", "--model", "synthetic:alexnet", "--data", "world-v2", "--out", "OUT"],
     "world-v2"),
])
def test_old_spellings_are_refused_in_one_line(argv: list[str], spec: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "o") if a == "OUT" else a for a in argv]
    if argv[0] == "vqa":
        argv += ["--out", str(tmp_path / "o")]
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"unknown data spec {spec!r}" in err, err
    assert "synthetic data is written synthetic:seed=S,n=N[," in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [
    ["evaluate", "localization", "--data", "world:3", "--model", "synthetic:vgg"],
    ["diagnose", "failures", "--data", "world:3"],
    ["study", "create", "class-discrimination", "--data", "world:3", "--db", "DB"],
])
def test_old_spelling_in_dataset_commands_names_the_synthetic_form(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "s.sqlite") if a == "DB" else a for a in argv]
    if argv[0] == "diagnose":
        argv += ["--out", str(tmp_path / "d")]
    code, _, err = run(capsys, *argv)
    assert code == 2 and "unknown dataset spec 'world:3'" in err, err
    assert "synthetic data is written synthetic:seed=S,n=N[,...]" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_spec_in_a_command_is_one_line_exit_2(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["evaluate", "localization", "--data", "synthetic:seed=1,n=2,n=3",
                  "--model", "synthetic:vgg"],
                 ["vqa", "synthetic:seed=1,n=2,objects=9-1", "-q", "How many animals are there?",
                  "--out", str(tmp_path)],
                 ["dissect", "--model", "synthetic:alexnet", "--data", "synthetic:seed=1",
                  "--out", str(tmp_path / "d")]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err.count("bad data spec") == 1, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
