"""Sec. 6's numbers on world v2 beside the paper's, as a markdown section.

>>> from camlens.diagnose.report import section
>>> print(section(quick=True))      # small sizes: a smoke run of a few minutes

``quick=False`` runs the sizes of docs/diagnose.md (200 held-out scenes for the failures,
200 attacked images, the bias experiment's 1200 training scenes per model): long on a busy
2-core machine (see docs/diagnose.md for the times).
"""

from __future__ import annotations

from typing import Any

from camlens.synthetic.v2 import HELDOUT_SEED

__all__ = ["section", "measure", "markdown"]


def measure(quick: bool) -> dict[str, Any]:
    """Run the three diagnoses on world v2 (the ``vgg`` net; the bias experiment's small nets)
    and return their summaries."""
    from camlens.diagnose.adversarial import adversarial_study
    from camlens.diagnose.bias_experiment import run
    from camlens.diagnose.data import load_items, load_record
    from camlens.diagnose.failures import diagnose_failures

    n_fail, n_adv = (40, 8) if quick else (200, 200)
    rec = load_record("synthetic:vgg")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        failures = diagnose_failures(rec, load_items(f"synthetic:seed={HELDOUT_SEED},n={n_fail}"),
                                     f"{tmp}/f", examples=0)
        adversarial = adversarial_study(
            rec, load_items(f"synthetic:seed={HELDOUT_SEED},n={n_adv}"),
            steps=10 if quick else 30)
    bias = run(n_train=150 if quick else 1200, n_test=60 if quick else 300,
               epochs=2 if quick else 10)
    for m in bias["models"].values():
        m.pop("state")
    return {"quick": quick, "failures": failures, "adversarial": adversarial, "bias": bias}


def _p(v: Any, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.3g}"


def markdown(m: dict[str, Any]) -> str:
    """The markdown section of :func:`measure`'s results."""
    f, a, b = m["failures"], m["adversarial"], m["bias"]
    s = a["successful"]
    lines = [
        "## Diagnosing with Grad-CAM (Sec. 6)" + (" (quick run)" if m["quick"] else ""),
        "",
        f"**Failure modes (6.1)**, `synthetic:vgg` on {f['images']} held-out scenes: "
        f"{f['top1_failures']} top-1 and {f['top5_failures']} top-5 failures. The predicted "
        "class's Grad-CAM peaks on something that resembles the predicted class (an object or "
        f"decoy of its confusable group) in {_p(f.get('predicted_peak_resembling'))} of failures "
        f"(those pixels cover {_p(f.get('resembling_area_mean'))} of an image), on a related "
        f"object (same supercategory) in {_p(f.get('predicted_peak_related'))}; the paper shows "
        "examples only (\"seemingly unreasonable predictions have reasonable explanations\").",
        "",
        "| Adversarial noise (6.2) | paper | camlens before | camlens after |",
        "|---|---|---|---|",
        f"| attack success (p(target) > 0.9999) | shown on examples | | "
        f"{_p(a['success_rate'])} of {a['images']} |",
        f"| p(true class) | low | {_p(s['p_true_before_mean'], False)} | "
        f"{_p(s['p_true_after_mean'], False)} |",
        f"| pointing hit (true class) | \"correctly localize\" | {_p(s['pointing_before'])} | "
        f"{_p(s['pointing_after'])} |",
        f"| box IoU (true class) | | {_p(s['iou_before'], False)} | "
        f"{_p(s['iou_after'], False)} |",
        f"| target's map: mass on objects (area {_p(s['object_area'])}) | \"background\" | | "
        f"{_p(s['target_mass_on_objects'])} |",
        "",
        "| Dataset bias (6.3) | paper | camlens |",
        "|---|---|---|",
    ]
    for name, paper in (("biased", "82%"), ("balanced", "90%")):
        st = b["models"][name]["study"]
        cue = next((r for r in st["ranking"] if r["region"] == "cue band"), None)
        lines.append(
            f"| {name} model: test accuracy (cue at chance) | {paper} | {_p(st['accuracy'])} "
            f"(cue agrees {_p(st.get('accuracy_cue_agrees'))}, differs "
            f"{_p(st.get('accuracy_cue_differs'))}); evidence on the cue band "
            f"{_p(cue['share'] if cue else None)}, rank "
            f"{[r['region'] for r in st['ranking']].index('cue band') + 1 if cue else 'n/a'} "
            f"of {len(st['ranking'])} regions |")
    return "\n".join(lines) + "\n"


def section(quick: bool = True) -> str:
    """Measure (:func:`measure`) and return the markdown section."""
    return markdown(measure(quick))
