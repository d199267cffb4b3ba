"""The Grad-CAM paper's numbers, and the rows we run to compare with them, as data.

Numbers are facts reported by Selvaraju et al.; where we could not check an entry against the
paper's text it is marked (see the notes on each).
"""

from __future__ import annotations

from typing import Any

PAPER_SOURCE = (
    "Selvaraju et al., \"Grad-CAM: Visual Explanations from Deep Networks via Gradient-based "
    "Localization\", ICCV 2017 / IJCV 2019 (arXiv:1610.02391)"
)

#: Table 1, ILSVRC-15 val, VGG-16 (CAM: VGG-16-GAP, a re-trained network): top-1 loc, top-5
#: loc, top-1 cls, top-5 cls error in %. ``None``: not reported.
PAPER_TABLE1: dict[str, tuple[float | None, ...]] = {
    "Backprop": (61.12, 51.46, 30.38, 10.89),
    "c-MWP": (70.92, 63.04, 30.38, 10.89),
    "Grad-CAM": (56.51, 46.41, 30.38, 10.89),
    "CAM": (57.20, 45.14, 31.2, 11.4),
}
#: Entries we could not check against the paper's text here (recalled, not verified).
PAPER_TABLE1_UNSURE = {("CAM", 2), ("CAM", 3)}

#: Table 3 (appendix of the arXiv / IJCV version): top-1 localisation error in % of Grad-CAM
#: ablations on ILSVRC-15 val, VGG-16. Recalled, NOT verified against the paper here.
PAPER_TABLE3: dict[str, float] = {
    "Grad-CAM": 59.65,
    "without ReLU": 74.98,
    "GMP gradients": 59.96,
    "Deconv ReLU backward": 83.95,
    "Guided ReLU backward": 59.14,
}

#: Sec. 4.3: pointing accuracy, top-5 + rejection (threshold from a held-out set), VGG-16.
PAPER_POINTING = {"Grad-CAM": 70.58, "c-MWP": 60.30}

#: Sec. 5.3: rank correlation with occlusion maps, averaged over PASCAL VOC 2007 val.
#: We recall the 0.261 as Guided Grad-CAM's (the paper compares the fine-grained maps);
#: unverified here.
PAPER_FAITHFULNESS = {"Guided Grad-CAM": 0.261, "c-MWP": 0.220, "Guided Backprop": 0.168}

PAPER = {"table1": PAPER_TABLE1, "table3": PAPER_TABLE3, "pointing": PAPER_POINTING,
         "faithfulness": PAPER_FAITHFULNESS, "source": PAPER_SOURCE}

#: The paper's methods we do not implement: their rows show the paper's number only.
NOT_IMPLEMENTED = ("c-MWP",)

# --------------------------------------------------------------------------------------------
# what we run

#: Table 1 rows: (row name, method, options, needs the GAP head).
TABLE1_ROWS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("Backprop", "gradient", {}, False),
    ("Guided Backprop", "guided-backprop", {}, False),
    ("Grad-CAM", "gradcam", {}, False),
    ("Guided Grad-CAM", "guided-gradcam", {}, False),
    ("CAM", "cam", {}, True),
    ("Occlusion", "occlusion", {}, False),  # window/stride/fill from the config
]

MINMAX = "Grad-CAM, min-max scaled first"
MINMAX_NORELU = "without ReLU, min-max scaled first"

#: Table 3 rows at the default layer: (row name, options, what the 15% threshold is a fraction
#: of). The two "min-max scaled first" rows test why removing the ReLU hurts in the paper.
TABLE3_ROWS: list[tuple[str, dict[str, Any], str]] = [
    ("Grad-CAM", {}, "max"),
    ("without ReLU", {"relu": False}, "max"),
    ("GMP gradients", {"pooling": "gmp"}, "max"),
    ("Deconv ReLU backward", {"backward": "deconv"}, "max"),
    ("Guided ReLU backward", {"backward": "guided"}, "max"),
    (MINMAX, {}, "range"),
    (MINMAX_NORELU, {"relu": False}, "range"),
]

#: Earlier layers: the rectified output of the last conv of each block (nets.py layout).
EARLIER_LAYERS = [("block 2 (features.8, 32x32)", "features.8"),
                  ("block 1 (features.3, 64x64)", "features.3")]

POINTING_ROWS = [("Backprop", "gradient"), ("Guided Backprop", "guided-backprop"),
                 ("Grad-CAM", "gradcam"), ("Guided Grad-CAM", "guided-gradcam"), ("CAM", "cam")]

FAITHFULNESS_ROWS = [("Backprop", "gradient"), ("Guided Backprop", "guided-backprop"),
                     ("Grad-CAM", "gradcam"), ("Guided Grad-CAM", "guided-gradcam"),
                     ("CAM", "cam")]
