"""Pixel-space methods: input gradients under a rectifier rule, alone or times Grad-CAM.

- ``gradient``: dy^c/dx (Simonyan et al.; the paper's "Backprop").
- ``guided-backprop``: dy^c/dx with every rectifier's backward guided (Springenberg et al.).
- ``deconvnet``: dy^c/dx with every rectifier's backward a ReLU of the gradient (Zeiler & Fergus).
- ``guided-gradcam`` / ``deconv-gradcam``: those maps times the bilinearly upsampled Grad-CAM
  L^c (Sec. 3.2).

Maps are (B, K, C, H, W), scaled per map as 0.5 + 0.5 * raw / max|raw|.
"""

from __future__ import annotations

from camlens import maps
from camlens.evidence import Evidence, Needs
from camlens.explanation import Explanation
from camlens.guided import Rule
from camlens.methods.assemble import heatmaps, result
from camlens.methods.gradcam import gradcam_maps
from camlens.methods.registry import Job, register


def _warn_if_no_rectifier(ev: Evidence, job: Job, method: str) -> None:
    if ev.rectifier_calls == 0:
        seen = ("rectifier (ReLU, ReLU6)" if job.rectifiers == "functions" else
                "nn.ReLU or nn.ReLU6 module (rectifiers='modules' sees no functional ones)")
        ev.warnings.append(
            f"{method}: no {seen} ran in the model's forward pass, so its rule changes nothing "
            "and the map is built from the plain input gradient; SiLU, GELU and other smooth "
            "activations are not rectifiers")


def _pixel(job: Job, ev: Evidence, method: str, rule: Rule) -> Explanation:
    if rule != "normal":
        _warn_if_no_rectifier(ev, job, method)
    grads = ev.input_grads(rule)
    return result(job, ev, method, maps.signed_scale(grads).float(), grads, None)


def _input_needs(rule: Rule) -> Needs:
    return Needs(input_rules=frozenset({rule}))


@register("gradient", needs=lambda job, **_: _input_needs("normal"), needs_layer=False,
          pixel_space=True, summary="Gradient (Simonyan et al.; the paper's Backprop): dy^c/dx")
def run_gradient(job: Job, ev: Evidence) -> Explanation:
    """The plain input gradient dy^c/dx."""
    return _pixel(job, ev, "gradient", "normal")


@register("guided-backprop", needs=lambda job, **_: _input_needs("guided"), needs_layer=False,
          pixel_space=True,
          summary="Guided Backpropagation: input gradients through guided rectifiers")
def run_guided_backprop(job: Job, ev: Evidence) -> Explanation:
    """dy^c/dx with every rectifier's backward guided (only positive gradients pass)."""
    return _pixel(job, ev, "guided-backprop", "guided")


@register("deconvnet", needs=lambda job, **_: _input_needs("deconv"), needs_layer=False,
          pixel_space=True,
          summary="Deconvolution (Zeiler & Fergus): input gradients through rectified backward")
def run_deconvnet(job: Job, ev: Evidence) -> Explanation:
    """dy^c/dx with every rectifier's backward replaced by a ReLU of the gradient."""
    return _pixel(job, ev, "deconvnet", "deconv")


def _fused(job: Job, ev: Evidence, method: str, rule: Rule, pooling: maps.Pooling, relu: bool,
           counterfactual: bool, backward: Rule) -> Explanation:
    """Pixel-space map under ``rule`` times the upsampled Grad-CAM (layer gradients under
    ``backward``)."""
    _warn_if_no_rectifier(ev, job, method)
    pairs = [gradcam_maps(a, g, pooling=pooling, relu=relu, counterfactual=counterfactual)
             for a, g in zip(ev.activations, ev.layer_grads(backward))]
    heat, fused = heatmaps(job, [p[0] for p in pairs])
    # Sec. 3.2: L^c is bilinearly upsampled to the input, then multiplied point-wise.
    heat = maps.upsample(pairs[0][0], heat.shape[-2:]) if len(pairs) == 1 else fused
    pixel = ev.input_grads(rule)
    raw = pixel * heat.to(pixel.dtype).unsqueeze(2)
    weights = pairs[0][1] if len(pairs) == 1 else None
    return result(job, ev, method, maps.signed_scale(raw).float(), raw, weights,
                  pooling=pooling, relu=relu, counterfactual=counterfactual, backward=backward)


def _register_fused(name: str, rule: Rule, summary: str) -> None:
    """Register ``name``: the ``rule`` pixel-space map times Grad-CAM."""
    def needs(job: Job, *, backward: Rule = "normal", **_: object) -> Needs:
        return Needs(layer=True, layer_rules=frozenset({backward}),
                     input_rules=frozenset({rule}))

    def run(job: Job, ev: Evidence, *, pooling: maps.Pooling = "gap", relu: bool = True,
            counterfactual: bool = False, backward: Rule = "normal") -> Explanation:
        return _fused(job, ev, name, rule, pooling, relu, counterfactual, backward)

    run.__doc__ = f"{summary}: (B, K, 3, H, W) times bilinear-upsampled Grad-CAM (B, K, 1, H, W)."
    register(name, needs=needs, needs_layer=True, pixel_space=True, summary=summary)(run)


_register_fused("guided-gradcam", "guided",
                "Guided Grad-CAM: Guided Backprop times the upsampled Grad-CAM")
_register_fused("deconv-gradcam", "deconv",
                "Deconvolution Grad-CAM: Deconvnet times the upsampled Grad-CAM")
