#!/usr/bin/env python3
"""Why HiResCAM/LayerCAM maps of VGG-16 (batch 16, ``features.29``) depend on the layout.

For the same input and target, computes the layer's activations A and gradients g in the
default (NCHW) and the channels-last layout, and in float64 (NCHW) as the reference; counts the
max-pool windows of ``features.30`` whose argmax differs, and shows which layer pixels of the
maps differ. Output: benchmarks/results/layout_cause_vgg16_b16.txt

    cd benchmarks && PYTHONPATH=../src nice -n 19 /tmp/benchvenv/bin/python layout_cause.py
"""

import copy
import gc

import run
import torch
import torch.nn.functional as F

import camlens

torch.set_num_threads(2)
CL, NCHW = torch.channels_last, torch.contiguous_format
model, layer = run.build_model("vgg16")  # layer: features.29, the ReLU before the last pool
x = run.make_input(16)
t1, _ = run.targets_of(model, x)


def activations(m: torch.nn.Module, x: torch.Tensor, layout: torch.memory_format,
                chunk: int = 16) -> torch.Tensor:
    """features.29's output A (B, 512, 14, 14), computed in ``layout``."""
    with torch.no_grad():
        return torch.cat([m.features[:30](c.contiguous(memory_format=layout))
                          for c in x.split(chunk)])


def rest(m: torch.nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g = d score / d A, pool argmax indices) for A, through features.30 and the head."""
    a = a.detach().requires_grad_()
    pooled, idx = F.max_pool2d(a, 2, 2, return_indices=True)
    score = m.classifier(torch.flatten(m.avgpool(pooled), 1)).gather(1, t1).sum()
    (g,) = torch.autograd.grad(score, a)
    return g, idx


def maps(a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Layer-resolution maps (B, 14, 14): HiResCAM and LayerCAM, both after their ReLU."""
    return {"hirescam": (g * a).sum(1).relu(), "layercam": (g.relu() * a).sum(1).relu()}


def scaled(m: torch.Tensor) -> torch.Tensor:
    flat = m.flatten(1).double()
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo)).view_as(m)


# float64 reference, in the default layout: first, and its copy of the model given back to the
# system before the float32 explain calls (one image at a time: float64 convolutions unfold
# their input, 0.9 GB for 4 images at conv1_2)
m64 = copy.deepcopy(model).double()
a64 = activations(m64, x.double(), NCHW, chunk=1)
g64, idx64 = rest(m64, a64)
res = {"f64": (a64, g64, idx64, maps(a64, g64))}
del m64
gc.collect()

for name, layout in (("nchw", NCHW), ("cl", CL)):
    a = activations(model, x, layout)
    g, idx = rest(model, a.contiguous())
    res[name] = (a.contiguous(), g, idx, maps(a.contiguous(), g))
# the harness computes camlens's own maps: check it against camlens.explain in each layout
for method in ("hirescam", "layercam"):
    for name, flag in (("nchw", False), ("cl", True)):
        raw = camlens.explain(model, x, method=method, layer=layer, target=t1,
                              channels_last=flag).raw[:, 0]
        print(f"harness vs camlens.explain {method} {name}: max |diff| "
              f"{(raw - res[name][3][method]).abs().max().item():.2e}")

(a_n, g_n, i_n, m_n), (a_c, g_c, i_c, m_c), (a_d, g_d, i_d, m_d) = (
    res["nchw"], res["cl"], res["f64"])
print(f"\nA (features.29), float32 layouts: max |A_cl - A_nchw| "
      f"{(a_c - a_n).abs().max().item():.2e}, elements that differ "
      f"{int((a_c != a_n).sum())} of {a_n.numel()} (max |A| {a_d.abs().max().item():.2f})")
for name, a in (("NCHW", a_n), ("channels-last", a_c)):
    e = (a.double() - a_d).abs()
    print(f"  {name} vs float64: max |diff| {e.max().item():.2e}, mean {e.mean().item():.2e}")
# near ties in the float64 activations: windows whose two largest inputs are closer than the
# largest difference between the two float32 layouts
top2 = a_d.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2).topk(2, dim=-1).values
gap = top2[..., 0] - top2[..., 1]
tol = (a_c - a_n).abs().max().item()
print(f"  windows whose two largest inputs (float64) lie within {tol:.1e}: "
      f"{int(((gap < tol) & (top2[..., 0] > 0)).sum())} (exact ties of zeros not counted)")
flip = i_c != i_n
print(f"max-pool windows (16 x 512 x 7 x 7 = {flip.numel()}): argmax differs between layouts "
      f"in {int(flip.sum())}; NCHW vs float64 in {int((i_n != i_d).sum())}; channels-last vs "
      f"float64 in {int((i_c != i_d).sum())}")
# the flipped windows: how close the two competing elements are, and which layout float64 backs
b, c, _, _ = flip.nonzero(as_tuple=True)
fa = a_n.flatten(2)
vn = fa[b, c, i_n[flip]]
vc = fa[b, c, i_c[flip]]
print(f"at those windows the two elements differ by at most {(vn - vc).abs().max().item():.2e} "
      f"(relative {((vn - vc).abs() / vn.abs()).max().item():.1e}; float32 eps 1.2e-07); "
      f"float64's argmax equals NCHW's in {int((i_d[flip] == i_n[flip]).sum())}, channels-"
      f"last's in {int((i_d[flip] == i_c[flip]).sum())}")
for i, (bb, cc) in enumerate(zip(b.tolist(), c.tolist())):
    p, q, r = int(i_n[flip][i]), int(i_c[flip][i]), int(i_d[flip][i])
    print(f"  sample {bb} channel {cc}: NCHW picks {divmod(p, 14)} ({vn[i].item():.8f}), "
          f"channels-last {divmod(q, 14)} ({vc[i].item():.8f}), float64 {divmod(r, 14)}; "
          f"gradient there {g_n.flatten(2)[bb, cc, p].item():+.2e}")
# does the whole difference come from A? channels-last A through the NCHW pool and head
g_cn, _ = rest(model, a_c)
print(f"channels-last A through the NCHW pool + head: max |g - g_cl| "
      f"{(g_cn - g_c).abs().max().item():.2e} (so the pool and head add nothing)")

# which layer pixels differ, and are they exactly the flipped windows' two elements?
moved = torch.zeros(16, 14 * 14, dtype=torch.bool)
wt = g_n.abs().flatten(2).amax(1)  # any gradient there at all
for bb, cc, p, q in zip(b.tolist(), c.tolist(), i_n[flip].tolist(), i_c[flip].tolist()):
    if g_n.flatten(2)[bb, cc, p] != 0 or g_c.flatten(2)[bb, cc, q] != 0:
        moved[bb, p] = moved[bb, q] = True
for method in ("hirescam", "layercam"):
    d = (scaled(m_c[method]) - scaled(m_n[method])).abs().flatten(1)
    big = d > 1e-4
    print(f"\n{method}: scaled maps, channels-last vs NCHW: max |diff| {d.max().item():.3f}; "
          f"{int(big.sum())} layer pixels differ by > 1e-4, of them at a flipped window "
          f"{int((big & moved).sum())}; largest difference elsewhere "
          f"{d[~moved].max().item():.1e}")
    ref = scaled(m_d[method]).flatten(1)
    for name, m in (("NCHW", m_n), ("channels-last", m_c)):
        e = (scaled(m[method]).flatten(1) - ref).abs()
        print(f"  {name} vs float64: max |diff| {e.max().item():.2e}, mean {e.mean().item():.1e}")
