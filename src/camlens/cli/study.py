"""``camlens study``: the paper's human studies (Sec. 5): create one, invite participants, read
the results.

    camlens study create class-discrimination --data synthetic:seed=7,n=100,kind=two \\
        --model synthetic:vgg --db study.sqlite
    camlens study create trust --data synthetic:seed=8,n=400 --model-a synthetic:vgg \\
        --model-b synthetic:alexnet --db trust.sqlite
    camlens study invite --db study.sqlite --n 20
    camlens serve --db study.sqlite          # participants answer at the printed links
    camlens study results --db study.sqlite --csv responses.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from camlens.cli.options import debug_options, positive_int
from camlens.loading import CliError

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def _methods(values: list[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        return default
    return tuple(m.strip() for v in values for m in v.split(",") if m.strip())


def add(sub: Any) -> None:
    p = sub.add_parser(
        "study", help="the paper's human studies: create, invite, results",
        description="Human studies of explanations (Sec. 5): class discrimination (which of two "
                    "categories does a visualisation show?) and trust (which of two models' "
                    "explanations is more trustworthy?). Participants answer in the browser: "
                    "`camlens serve --db FILE`.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True,
                               parser_class=type(p))
    create = actions.add_parser("create", help="build a study from a dataset and models")
    kinds = create.add_subparsers(dest="kind", metavar="KIND", required=True,
                                  parser_class=type(p))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True,
                        help="FORMAT:PATH as for camlens evaluate, e.g. "
                             "synthetic:seed=7,n=100,kind=two or voc:VOCdevkit/VOC2007")
    common.add_argument("--db", required=True, type=Path,
                        help="the study database to create (SQLite; must not exist)")
    common.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="methods compared (space or comma separated)")
    common.add_argument("--ratings", type=positive_int, default=9,
                        help="ratings wanted per trial (9, the paper's)")
    common.add_argument("--seed", type=int, default=0,
                        help="image choice, option order, model order, participant orders")
    common.add_argument("--title", default=None, help="the study's title on its pages")
    common.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    common.add_argument("--base-url", default=DEFAULT_BASE_URL,
                        help=f"where `camlens serve` will run, for the printed admin link "
                             f"({DEFAULT_BASE_URL})")
    cd = kinds.add_parser(
        "class-discrimination", parents=[common, debug_options()],
        help="Sec. 5.1: which of the two categories does a visualisation show?",
        description="Images with exactly two annotated categories; per image, category and "
                    "method a visualisation of that category; participants pick the category. "
                    "Methods default to the paper's: deconvnet guided-backprop deconv-gradcam "
                    "guided-gradcam.")
    cd.add_argument("--model", default="synthetic:vgg",
                    help="bundled name, synthetic:vgg|alexnet|..., torchvision:NAME, file.py:ATTR")
    cd.add_argument("--weights", default=None, metavar="FILE", help="state dict for --model")
    cd.add_argument("--layer", default=None, help="Grad-CAM layer (default: the model's)")
    cd.add_argument("--pairs", type=positive_int, default=90,
                    help="image-category pairs, even (90, the paper's: 45 images x 2)")
    cd.set_defaults(func=run_create)
    tr = kinds.add_parser(
        "trust", parents=[common, debug_options()],
        help="Sec. 5.2: which of two models' explanations is more trustworthy?",
        description="Images with one annotated category that both models predict; per image and "
                    "method both models' explanations side by side (A/B order random per "
                    "trial), rated -2..+2. Results: model A's relative reliability (the paper: "
                    "A = VGG-16, B = AlexNet). Methods default to guided-backprop "
                    "guided-gradcam.")
    tr.add_argument("--model-a", required=True, help="the model whose reliability is reported")
    tr.add_argument("--model-b", required=True, help="the model it is compared with")
    tr.add_argument("--weights-a", default=None, metavar="FILE")
    tr.add_argument("--weights-b", default=None, metavar="FILE")
    tr.add_argument("--layer-a", default=None)
    tr.add_argument("--layer-b", default=None)
    tr.add_argument("--images", type=positive_int, default=50,
                    help="images (the first that both models predict correctly; 50)")
    tr.set_defaults(func=run_create)

    inv = actions.add_parser("invite", parents=[debug_options()],
                             help="add participants and print their links")
    inv.add_argument("--db", required=True, type=Path)
    inv.add_argument("--n", type=positive_int, required=True, help="how many participants")
    inv.add_argument("--base-url", default=DEFAULT_BASE_URL,
                     help=f"where `camlens serve` runs ({DEFAULT_BASE_URL})")
    inv.set_defaults(func=run_invite)

    res = actions.add_parser("results", parents=[debug_options()],
                             help="the statistics (markdown) and the responses (CSV)")
    res.add_argument("--db", required=True, type=Path)
    res.add_argument("--csv", default=None, type=Path, help="write one row per response")
    res.add_argument("--json", default=None, type=Path, help="write the statistics as JSON")
    res.set_defaults(func=run_results)


def run(args: argparse.Namespace) -> int:
    return int(args.func(args))


def _open(db: Path) -> Any:
    from camlens.study import StudyError, StudyStore

    try:
        return StudyStore(db)
    except StudyError as exc:
        raise CliError(str(exc)) from None


def run_create(args: argparse.Namespace) -> int:
    from camlens import study
    from camlens.study import StudyError

    db: Path = args.db
    if db.exists():
        raise CliError(f"--db {db} already exists; give a new file (one study per database)")
    if not db.parent.is_dir():
        raise CliError(f"--db {db}: folder {db.parent} does not exist")
    try:
        if args.kind == "class-discrimination":
            plan = study.class_discrimination(
                args.data, args.model, _methods(args.methods, study.PAPER_CLASS_METHODS),
                pairs=args.pairs, ratings=args.ratings, seed=args.seed, layer=args.layer,
                weights=args.weights, device=args.device, title=args.title)
        else:
            plan = study.trust(
                args.data, args.model_a, args.model_b,
                _methods(args.methods, study.PAPER_TRUST_METHODS), images=args.images,
                ratings=args.ratings, seed=args.seed, layer_a=args.layer_a,
                layer_b=args.layer_b, weights_a=args.weights_a, weights_b=args.weights_b,
                device=args.device, title=args.title)
        store, admin = study.create(str(db), plan)
    except (ValueError, StudyError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    items = len({t.item for t in plan.trials})
    per_item = len(plan.trials) // max(1, items)
    need = per_item * plan.study.ratings
    base = args.base_url.rstrip("/")
    print(f"created a {plan.study.kind} study in {db}: {len(plan.trials)} trials "
          f"({items} images x {per_item} conditions), methods {', '.join(plan.study.methods)}")
    print(f"each participant answers {items} trials (one per image); {need} participants "
          f"give every trial {plan.study.ratings} ratings")
    print(f"admin token: {admin}  (shown once: only its hash is stored)")
    print(f"results: {base}/study/admin/{admin}  (after `camlens serve --db {db}`), or "
          f"`camlens study results --db {db}`")
    print(f"next: camlens study invite --db {db} --n {need}")
    return 0


def run_invite(args: argparse.Namespace) -> int:
    from camlens.study import StudyError

    store = _open(args.db)
    try:
        tokens = store.invite(args.n)
    except StudyError as exc:
        raise CliError(str(exc)) from None
    base = args.base_url.rstrip("/")
    for token in tokens:
        print(f"{base}/study/p/{token}")
    print(f"{len(tokens)} participant link(s) added ({store.completion()[0]} in all); the "
          "links are shown once (only hashes are stored)", file=sys.stderr)
    return 0


def run_results(args: argparse.Namespace) -> int:
    import json

    from camlens.io import atomic_path
    from camlens.study import summarise, write_csv

    for out in (args.csv, args.json):
        if out is not None and not out.parent.is_dir():
            raise CliError(f"{out}: folder {out.parent} does not exist")
    store = _open(args.db)
    results = summarise(store)
    print(results.markdown(), end="")
    if args.csv is not None:
        write_csv(store, args.csv)
        print(f"wrote {len(store.responses())} responses to {args.csv}", file=sys.stderr)
    if args.json is not None:
        with atomic_path(args.json, make_parents=False) as tmp:
            Path(tmp).write_text(json.dumps(results.as_json(), indent=1) + "\n",
                                 encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
