"""Visual question answering on world v2 (Sec. 8.2): a deeper-LSTM-Q + norm-I net, its training,
its answers explained (Fig. 12) and the paper's measurements of answer maps. See docs/vqa.md.

>>> from camlens.vqa import load_bundled, explain_answers, to_input
>>> net, vocab = load_bundled()                       # the shipped net, offline
>>> r = explain_answers(net, vocab, to_input(photo), "What colour is the canary?")
>>> r.top(vocab), r.maps["gradcam"].maps.shape        # answers, (1, K, 112, 112)
"""

from camlens.vqa.explain import FIG12, VQAExplanation, explain_answers, to_input
from camlens.vqa.model import (
    BUNDLED_DIR,
    DEFAULT_LAYER,
    UnknownWordError,
    Vocabulary,
    VQANet,
    load_bundled,
)

__all__ = ["BUNDLED_DIR", "DEFAULT_LAYER", "FIG12", "UnknownWordError", "VQAExplanation",
           "VQANet", "Vocabulary", "explain_answers", "load_bundled", "to_input"]
