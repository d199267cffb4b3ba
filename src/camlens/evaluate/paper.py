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
    "CAM": (57.20, 45.14, 33.40, 12.20),
}
#: Entries we could not check against the paper's text here (recalled, not verified). CAM's
#: top-1 classification error agrees with the text ("2.98% worse top-1": 30.38 + 2.98 = 33.36).
PAPER_TABLE1_UNSURE = {("CAM", 3)}

#: Table 3 (appendix of the arXiv / IJCV version): top-1 localisation error in % of Grad-CAM
#: ablations on ILSVRC-15 val, VGG-16. Recalled, NOT verified against the paper here.
PAPER_TABLE3: dict[str, float] = {
    "Grad-CAM": 59.65,
    "without ReLU": 74.98,
    "GMP gradients": 59.96,
    "Deconv ReLU backward": 83.95,
    "Guided ReLU backward": 59.14,
}

#: Sec. 4.3 / Appendix D: pointing accuracy, top-5 + rejection (threshold from a held-out set;
#: the paper's footnote: GoogLeNet fine-tuned on COCO, as provided by Zhang et al.).
PAPER_POINTING = {"Grad-CAM": 70.58, "c-MWP": 60.30}

#: Sec. 5.3: rank correlation with occlusion maps, averaged over 2510 PASCAL VOC 2007 val
#: images (checked against the paper's text: "Grad-CAM and Guided Grad-CAM ... 0.254 and
#: 0.261 (vs. 0.168, 0.220 and 0.208 achieved by Guided Backpropagation, c-MWP and CAM)").
PAPER_FAITHFULNESS = {"Grad-CAM": 0.254, "Guided Grad-CAM": 0.261, "Guided Backprop": 0.168,
                      "c-MWP": 0.220, "CAM": 0.208}

#: Sec. 4.2: mean IoU (%) on PASCAL VOC 2012 of SEC trained from each kind of seed.
PAPER_SEGMENTATION = {"Grad-CAM": 49.6, "CAM": 44.6}

#: Sec. 4.1: VGG-16-GAP's top-1 classification error is this much worse than VGG-16's (points).
PAPER_CAM_COST = 2.98

PAPER = {"table1": PAPER_TABLE1, "table3": PAPER_TABLE3, "pointing": PAPER_POINTING,
         "faithfulness": PAPER_FAITHFULNESS, "segmentation": PAPER_SEGMENTATION,
         "source": PAPER_SOURCE}

# --------------------------------------------------------------------------------------------
# what we run

#: Table 1 rows: (row name, method, options, needs the GAP head). c-MWP and the layer methods
#: run at the net's default (Grad-CAM) layer.
TABLE1_ROWS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("Backprop", "gradient", {}, False),
    ("c-MWP", "cmwp", {}, False),
    ("Grad-CAM", "gradcam", {}, False),
    ("CAM", "cam", {}, True),
    ("Guided Backprop", "guided-backprop", {}, False),
    ("Guided Grad-CAM", "guided-gradcam", {}, False),
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

#: Earlier layers (Appendix B, Fig. 13), the same three rows for every net.
EARLIER_ROWS = ("one conv earlier", "end of the block before", "two blocks before")

#: net -> the layer of each :data:`EARLIER_ROWS` row (world v2's nets, camlens.synthetic.v2.nets):
#: the rectified conv before the default layer, then the rectified output of the blocks before.
EARLIER_LAYERS: dict[str, tuple[str, str, str]] = {
    "vgg": ("features.16", "features.11", "features.6"),  # 14, 28, 56 px maps
    "vgg_gap": ("features.18", "features.11", "features.6"),  # 14, 28, 56
    "alexnet": ("features.9", "features.4", "features.1"),  # 14, 28, 56
    "resnet": ("layer4.0", "layer3", "layer2"),  # 7, 14, 28
}

#: Pointing game and faithfulness rows: (row name, method); CAM only on the GAP nets.
POINTING_ROWS = [("Grad-CAM", "gradcam"), ("c-MWP", "cmwp"), ("CAM", "cam"),
                 ("Backprop", "gradient"), ("Guided Backprop", "guided-backprop"),
                 ("Guided Grad-CAM", "guided-gradcam")]

FAITHFULNESS_ROWS = [("Grad-CAM", "gradcam"), ("Guided Grad-CAM", "guided-gradcam"),
                     ("Guided Backprop", "guided-backprop"), ("c-MWP", "cmwp"), ("CAM", "cam"),
                     ("Backprop", "gradient")]

#: A claim's difference counts when it exceeds this many standard errors (about 95%).
Z_SCORE = 2.0
