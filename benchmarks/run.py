#!/usr/bin/env python3
"""camlens against captum, pytorch-grad-cam and torchcam: speed, peak memory, and agreement.

One entry point (issue 3). For each model and batch size it

1. **times** every job side by side in ONE process per model, interleaved with the plain forward
   pass (job A, forward, job B, forward, ...; the order rotates every round), after a warm-up
   call, and reports the median and its ratio to the median forward pass (``torch.inference_mode``)
   of the same process ("x forward"), and the median over rounds of each call's ratio to the
   forward pass timed just before it ("paired", less sensitive to load that comes and goes).
   Children run with ``OMP_WAIT_POLICY=PASSIVE``: on the shared 2-core machine spinning OpenMP
   threads made a 2-thread forward pass up to 30x slower than a 1-thread one. That process runs with
   ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736`` (glibc's
   default malloc returns large buffers to the OS and page-faults them back on the next call,
   which moves timings by up to 2.5x here; see shared/BENCHMARKING.md);
2. **checks agreement**: the maps of the first call of each peer job and of camlens, each
   min-max scaled per map, compared element-wise (largest and mean absolute difference), at the
   layer's resolution where both sides expose it, else at input resolution;
3. measures **peak memory** of each job in its own process with glibc's default allocator:
   ``ru_maxrss`` after the call minus the RSS right before it (the high-water mark is reset just
   before the call, through ``/proc/self/clear_refs``, so model construction does not count),
   also as a ratio to the increase of the inference job.

Jobs (explicit, identical class targets for every library: the top-1, or the top-5, classes of the
model's own prediction): ``forward``; ``gradcam`` (one map per image); ``top5`` (five maps per
image); ``guided`` (Guided Grad-CAM); ``occlusion`` (window 32, stride 16, zero fill, 64 occluded
images per forward; batch 1 only unless ``--occlusion-batches`` says otherwise). Opt-in with
``--jobs`` (issue 14; benchmarks/peers.py says which peer class each is and with which camlens
options the equations match): ``gradcampp``, ``xgradcam``, ``hirescam``, ``layercam``,
``eigencam``, ``eigengradcam`` (one map per image), ``scorecam`` and ``ablationcam`` (perturbation
jobs, like occlusion at the ``--occlusion-batches`` sizes only).

Examples::

    python benchmarks/run.py --quick                 # resnet50 + bundled model, batch 1 and 16
    python benchmarks/run.py                         # all five models
    python benchmarks/run.py --models resnet50 --batch-sizes 16 --jobs gradcam,top5 --no-memory
    python benchmarks/run.py --profile --models resnet50 --batch-sizes 16
    python benchmarks/run.py --models resnet50,vgg16 --jobs scorecam,ablationcam,gradcampp \
        --occlusion-batches 1,16 --no-memory

torchvision, captum, grad-cam and torchcam come from the ``bench`` extra (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from peers import FAMILY, camlens_call, pgc_call, torchcam_call

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
HERE = Path(__file__).resolve().parent

#: model -> Grad-CAM layer (None: the bundle's default layer).
MODELS: dict[str, str | None] = {
    "resnet50": "layer4",               # last residual stage (rectified output)
    "vgg16": "features.29",             # ReLU after the last conv (conv5_3), before the last pool
    "efficientnet_b0": "features.8",    # last conv block (1x1 conv -> BN -> SiLU, 1280 ch)
    "mobilenet_v3_large": "features.16",  # last conv block (1x1 conv -> BN -> Hardswish, 960 ch)
    "resnet18": "layer4",               # small: for smoke runs (--models resnet18 --size 64)
    "bundled": None,                    # camlens.models.load_default(): EfficientNet-Lite0
}
QUICK_MODELS = ("resnet50", "bundled")
KINDS = ("gradcam", "top5", "guided", "occlusion")
#: every job kind: the default ones, then issue 14's methods (opt-in with --jobs)
ALL_KINDS = KINDS + tuple(FAMILY)
#: jobs that run the model once per perturbation: only at the --occlusion-batches sizes
PERTURBATION = ("occlusion", "scorecam", "ablationcam")
LIBS = ("camlens", "captum", "pytorch-grad-cam", "torchcam")
#: which library has which job
HAS: dict[str, tuple[str, ...]] = {
    "camlens": ALL_KINDS,
    "captum": KINDS,
    "pytorch-grad-cam": ("gradcam", "top5", "guided") + tuple(k for k, f in FAMILY.items()
                                                              if f[2]),
    "torchcam": ("gradcam", "top5") + tuple(k for k, f in FAMILY.items() if f[3]),
    # opt-in (--libs ...,camlens-cl): camlens with channels_last=True, i.e. on a channels-last
    # copy of the input instead of the caller's layout; adds a forward pass on a channels-last
    # input ("forward-cl"), its fair baseline
    "camlens-cl": ALL_KINDS,
}
OCC_WINDOW, OCC_STRIDE, OCC_PER_EVAL = 32, 16, 64
SIZE = 224
THREADS = 2  # --threads


# --------------------------------------------------------------------------------------------
# models, inputs, jobs
# --------------------------------------------------------------------------------------------

def build_model(name: str) -> tuple[Any, str]:
    """(model in eval mode, Grad-CAM layer name); torchvision models get seeded random weights."""
    import torch

    torch.manual_seed(0)
    if name == "bundled":
        from camlens.models import load_default

        bundle = load_default()
        return bundle.model.eval(), bundle.default_layer
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    return model.eval(), MODELS[name]  # type: ignore[return-value]


def make_input(batch: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(1234)
    return torch.randn(batch, 3, SIZE, SIZE, generator=g)


class Job:
    """A callable job, with ``after`` run (untimed) after each call to clear ``.grad``."""

    def __init__(self, lib: str, kind: str, fn: Callable[[], Any],
                 after: Callable[[], None] | None = None) -> None:
        self.lib, self.kind, self.fn, self.after = lib, kind, fn, after

    @property
    def name(self) -> str:
        return f"{self.lib}:{self.kind}"

    def __call__(self) -> Any:
        return self.fn()

    def cleanup(self) -> None:
        if self.after is not None:
            self.after()


def make_job(lib: str, kind: str, model_for: Callable[[str], Any], layer: str, x: Any,
             t1: Any, t5: Any) -> Job:
    """Build one job; ``model_for(key)`` hands out a private deep copy of the model per key.

    Extractor objects (captum's, pytorch-grad-cam's, torchcam's) are built here, once, as a user
    would; only their calls are timed.
    """
    import torch
    import torch.nn.functional as F

    size = tuple(x.shape[-2:])
    c1 = t1[:, 0]
    if lib == "forward-cl":  # the plain forward pass on a channels-last copy of the input
        x = x.contiguous(memory_format=torch.channels_last)
    if lib in ("forward", "forward-cl"):
        m = model_for(lib)

        def forward() -> Any:
            with torch.inference_mode():
                return m(x)

        return Job(lib, kind, forward)

    if kind in FAMILY:  # issue 14's methods: each library's extractor, see peers.py
        if lib in ("camlens", "camlens-cl"):
            return Job(lib, kind, camlens_call(kind, model_for(lib), layer, x, t1,
                                               channels_last=lib == "camlens-cl"))
        call = {"pytorch-grad-cam": pgc_call, "torchcam": torchcam_call}[lib]
        return Job(lib, kind, call(kind, model_for(f"{lib}/{kind}"), layer, x, t1))

    if lib in ("camlens", "camlens-cl"):
        import functools

        import camlens

        m = model_for(lib)
        explain = functools.partial(camlens.explain, channels_last=lib == "camlens-cl")
        if kind == "gradcam":
            return Job(lib, kind, lambda: explain(m, x, method="gradcam", layer=layer, target=t1))
        if kind == "top5":
            return Job(lib, kind, lambda: explain(m, x, method="gradcam", layer=layer, target=t5))
        if kind == "guided":
            return Job(lib, kind, lambda: explain(m, x, method="guided-gradcam", layer=layer,
                                                  target=t1))
        if kind == "occlusion":
            return Job(lib, kind, lambda: explain(
                m, x, method="occlusion", target=t1, window=OCC_WINDOW, stride=OCC_STRIDE,
                fill=0.0, batch_size=OCC_PER_EVAL))

    if lib == "captum":
        from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam, Occlusion

        m = model_for("captum")
        mod = m.get_submodule(layer)
        if kind in ("gradcam", "top5"):
            gc_ = LayerGradCam(m, mod)
            cols = [c1] if kind == "gradcam" else [t5[:, k] for k in range(t5.shape[1])]

            def captum_gradcam() -> Any:
                layer_maps = [gc_.attribute(x, target=c, relu_attributions=True) for c in cols]
                up = [LayerAttribution.interpolate(a, size, "bilinear") for a in layer_maps]
                return torch.cat(layer_maps, 1), torch.cat(up, 1)

            return Job(lib, kind, captum_gradcam)
        if kind == "guided":
            ggc = GuidedGradCam(m, mod)
            return Job(lib, kind, lambda: ggc.attribute(x, target=c1, interpolate_mode="bilinear"))
        if kind == "occlusion":
            occ = Occlusion(m)
            return Job(lib, kind, lambda: occ.attribute(
                x, sliding_window_shapes=(3, OCC_WINDOW, OCC_WINDOW),
                strides=(3, OCC_STRIDE, OCC_STRIDE), baselines=0.0, target=c1,
                perturbations_per_eval=OCC_PER_EVAL))

    if lib == "pytorch-grad-cam":
        import numpy as np
        from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        m = model_for("pytorch-grad-cam")
        cam = GradCAM(model=m, target_layers=[m.get_submodule(layer)])

        def zero() -> None:  # it calls loss.backward(): .grad of every parameter is written
            m.zero_grad(set_to_none=True)

        def targets(col: Any) -> list:
            return [ClassifierOutputTarget(int(c)) for c in col.tolist()]

        if kind in ("gradcam", "top5"):
            cols = [c1] if kind == "gradcam" else [t5[:, k] for k in range(t5.shape[1])]
            return Job(lib, kind, lambda: np.stack(
                [cam(input_tensor=x, targets=targets(c)) for c in cols], axis=1), zero)
        if kind == "guided":
            gm = model_for("pytorch-grad-cam/guided")
            gb = GuidedBackpropReLUModel(gm)

            def pgc_guided() -> Any:
                mask = cam(input_tensor=x, targets=targets(c1))  # (B, H, W)
                # GuidedBackpropReLUModel explains only image 0 of what it is given: one call
                # per image (a copy, as it sets requires_grad on its argument)
                pix = np.stack([gb(x[i:i + 1].clone(), target_category=int(c))
                                for i, c in enumerate(c1.tolist())])  # (B, H, W, 3)
                return mask[..., None] * pix

            def zero_both() -> None:
                zero()
                gm.zero_grad(set_to_none=True)

            return Job(lib, kind, pgc_guided, zero_both)

    if lib == "torchcam":
        from torchcam.methods import GradCAM as TorchcamGradCAM

        m = model_for("torchcam")
        ext = TorchcamGradCAM(m, target_layer=layer)
        cols = [c1] if kind == "gradcam" else [t5[:, k] for k in range(t5.shape[1])]
        if kind in ("gradcam", "top5"):
            def torchcam_gradcam() -> Any:
                scores = m(x)
                layer_maps = [ext(class_idx=c.tolist(), scores=scores,
                                  retain_graph=i < len(cols) - 1)[0]
                              for i, c in enumerate(cols)]
                lm = torch.stack(layer_maps, 1)
                return lm, F.interpolate(lm, size=size, mode="bilinear", align_corners=False)

            return Job(lib, kind, torchcam_gradcam)

    raise ValueError(f"{lib} has no job {kind!r}")


def jobs_for(batch: int, kinds: tuple[str, ...], libs: tuple[str, ...],
             occlusion_batches: tuple[int, ...]) -> list[tuple[str, str]]:
    out = [("forward-cl", "forward")] if "camlens-cl" in libs else []
    for kind in kinds:
        if kind in PERTURBATION and batch not in occlusion_batches:
            continue
        for lib in libs:
            if kind in HAS[lib]:
                out.append((lib, kind))
    return out


def targets_of(model: Any, x: Any) -> tuple[Any, Any]:
    import torch

    with torch.inference_mode():
        idx = model(x).topk(5, dim=1).indices
    return idx[:, :1].clone(), idx.clone()


# --------------------------------------------------------------------------------------------
# agreement
# --------------------------------------------------------------------------------------------

def canon(lib: str, kind: str, out: Any) -> dict[str, Any]:
    """The maps of one call, keyed by resolution: 'layer' (B, K, h, w), 'input' (B, K, H, W),
    'pixel' (B, K, 3, H, W). Everything float64 on the CPU."""
    import numpy as np
    import torch

    def t(a: Any) -> Any:
        a = torch.from_numpy(np.asarray(a)) if not isinstance(a, torch.Tensor) else a
        return a.detach().double().cpu()

    if kind == "forward":  # forward-cl: a baseline, nothing to compare
        return {}
    if lib in ("camlens", "camlens-cl"):
        if kind == "guided":
            return {"pixel": t(out.raw)}  # maps are an affine rescaling of raw
        if kind == "occlusion":
            return {"input": t(out.raw)}
        return {"layer": t(out.raw), "input": t(out.maps)}
    if lib in ("captum", "torchcam") and kind in ("gradcam", "top5"):
        return {"layer": t(out[0]), "input": t(out[1])}
    if lib == "captum" and kind == "guided":
        return {"pixel": t(out).unsqueeze(1)}
    if lib == "captum" and kind == "occlusion":
        return {"input": t(out)[:, :1]}
    if lib == "pytorch-grad-cam" and kind in ("gradcam", "top5"):
        return {"input": t(out)}
    if lib == "pytorch-grad-cam" and kind in FAMILY:  # (B, H, W), scaled then resized
        return {"input": t(out).unsqueeze(1)}
    if lib == "torchcam" and kind in FAMILY:  # (B, h, w) layer maps
        return {"layer": t(out).unsqueeze(1)}
    if lib == "pytorch-grad-cam" and kind == "guided":
        return {"pixel": t(out).permute(0, 3, 1, 2).unsqueeze(1)}
    raise ValueError((lib, kind))


def minmax(maps: Any, dims: int) -> Any:
    import torch

    flat = maps.flatten(start_dim=maps.dim() - dims)
    lo = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - lo
    return torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1), 0)


def agreement(ref: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for res in ("layer", "input", "pixel"):
        if res in ref and res in other:
            a, b = ref[res], other[res]
            if a.shape != b.shape:
                return {"resolution": res, "error": f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"}
            dims = 3 if res == "pixel" else 2
            ma, mb = minmax(a, dims), minmax(b, dims)
            diff = (ma - mb).abs()
            const = int((a.flatten(start_dim=a.dim() - dims).std(dim=-1) == 0).sum())
            return {"resolution": res, "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                    "maps": int(ma.shape[0] * ma.shape[1]), "constant_camlens_maps": const}
    return {"error": "no common resolution"}


# --------------------------------------------------------------------------------------------
# timing (one process per model, interleaved)
# --------------------------------------------------------------------------------------------

def _copies(base: Any) -> Callable[[str], Any]:
    """``model_for(key)``: the model for the plain forward pass and camlens (which leaves no hooks
    and changes nothing on a model: tests/test_contract.py), a private deep copy for every other
    key (the peers leave hooks, and pytorch-grad-cam writes ``.grad``). Sharing the one model
    keeps two copies of VGG-16 (1.1 GB) out of a timing process."""
    cache: dict[str, Any] = {"forward": base, "camlens": base}

    def model_for(key: str) -> Any:
        if key not in cache:
            cache[key] = copy.deepcopy(base)
        return cache[key]

    return model_for


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def time_model(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(cfg["threads"])
    base, layer = build_model(name)
    model_for = _copies(base)
    results: dict[str, Any] = {"model": name, "layer": layer, "configs": []}
    for batch in cfg["batch_sizes"]:
        load_start = os.getloadavg()
        x = make_input(batch)
        t1, t5 = targets_of(model_for("forward"), x)
        fwd = make_job("forward", "forward", model_for, layer, x, t1, t5)
        jobs: list[Job] = []
        errors: dict[str, str] = {}
        for lib, kind in jobs_for(batch, tuple(cfg["kinds"]), tuple(cfg["libs"]),
                                  tuple(cfg["occlusion_batches"])):
            try:
                jobs.append(make_job(lib, kind, model_for, layer, x, t1, t5))
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                errors[f"{lib}:{kind}"] = f"{type(err).__name__}: {err}"
        # warm-up: the first call of each job also gives the maps for the agreement check
        warm: dict[str, float] = {}
        warm_fwd: dict[str, float] = {}  # the forward pass timed right before each warm-up call
        maps: dict[str, dict[str, Any]] = {}
        fwd_warm = [_timed(fwd)[0] for _ in range(cfg["warmup"])]

        def pair_forward(fwd: Job = fwd) -> float:
            """The forward pass a call is paired with: the median of --pair-forwards passes
            (more than one steadies the denominator of a single call that takes minutes)."""
            return statistics.median(_timed(fwd)[0] for _ in range(cfg.get("pair_forwards", 1)))

        for job in list(jobs):
            try:
                for i in range(cfg["warmup"]):
                    gc.collect()
                    warm_fwd[job.name] = pair_forward()
                    gc.collect()
                    dt, out = _timed(job)
                    job.cleanup()
                    if i == 0:
                        maps[job.name] = canon(job.lib, job.kind, out)
                    del out
                    print(f"[warm-up] {name} batch {batch} {job.name}: {dt:.2f} s (forward "
                          f"{warm_fwd[job.name]:.2f} s)", file=sys.stderr, flush=True)
                warm[job.name] = dt
            except Exception as err:  # noqa: BLE001
                errors[job.name] = f"{type(err).__name__}: {err}"
                jobs.remove(job)
        agree: dict[str, Any] = {}
        for job in jobs:
            ref = maps.get(f"camlens:{job.kind}")
            if job.lib != "camlens" and ref is not None and job.name in maps:
                agree[job.name] = agreement(ref, maps[job.name])
        del maps
        gc.collect()
        # repeats: as many as fit the budget, between min_repeats and repeats
        est_round = sum(warm.values()) + len(jobs) * statistics.median(fwd_warm)
        repeats = int(max(cfg["min_repeats"], min(cfg["repeats"],
                                                  cfg["budget"] // max(est_round, 1e-9))))
        times: dict[str, list[float]] = {j.name: [] for j in jobs}
        fwd_times: list[float] = []
        pair_fwd: dict[str, list[float]] = {j.name: [] for j in jobs}
        if repeats == 0:  # --repeats 0: the last warm-up call is the one sample (slow jobs)
            for job in jobs:
                times[job.name].append(warm[job.name])
                pair_fwd[job.name].append(warm_fwd[job.name])
                fwd_times.append(warm_fwd[job.name])
        for r in range(repeats):
            order = jobs[r % len(jobs):] + jobs[:r % len(jobs)] if jobs else []
            for job in order:
                gc.collect()
                fwd_times.append(pair_forward())
                pair_fwd[job.name].append(fwd_times[-1])
                gc.collect()
                dt, out = _timed(job)
                del out
                job.cleanup()
                times[job.name].append(dt)
        fwd_med = statistics.median(fwd_times) if fwd_times else statistics.median(fwd_warm)
        rows = [{"job": "forward:forward", "lib": "forward", "kind": "forward",
                 "median_ms": fwd_med * 1e3, "ratio": 1.0,
                 "times_ms": [t * 1e3 for t in fwd_times]}]
        for job in jobs:
            med = statistics.median(times[job.name])
            paired = [t / f for t, f in zip(times[job.name], pair_fwd[job.name])]
            rows.append({"job": job.name, "lib": job.lib, "kind": job.kind,
                         "median_ms": med * 1e3, "ratio": med / fwd_med,
                         "paired_ratio": statistics.median(paired),
                         "times_ms": [t * 1e3 for t in times[job.name]],
                         "agreement": agree.get(job.name)})
        results["configs"].append({"batch": batch, "repeats": repeats, "rows": rows,
                                   "errors": errors, "loadavg_start": load_start,
                                   "loadavg": os.getloadavg()})
        print(f"[timing] {name} batch {batch}: {repeats} rounds, forward "
              f"{fwd_med * 1e3:.1f} ms", file=sys.stderr, flush=True)
        del jobs, fwd
        gc.collect()
    return results


# --------------------------------------------------------------------------------------------
# peak memory (one process per job, default allocator)
# --------------------------------------------------------------------------------------------

def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def memory_job(name: str, batch: int, job_name: str, calls: int,
               threads: int = THREADS) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    lib, kind = job_name.split(":")
    base, layer = build_model(name)
    model_for = _copies(base)
    x = make_input(batch)
    # fixed classes (memory does not depend on which): no forward pass before the measurement
    t5 = torch.arange(5).repeat(batch, 1) + 100
    t1 = t5[:, :1].clone()
    job = make_job(lib, kind, model_for, layer, x, t1, t5)
    del base  # only the copies the job uses stay
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
        reset = True
    except OSError:
        reset = False
    before = _status_mb("VmRSS")
    kept = None
    for _ in range(calls):
        kept = job()  # the previous result stays alive during the next call, as in a user loop
        job.cleanup()
    peak_ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_hwm = _status_mb("VmHWM")
    del kept
    return {"model": name, "batch": batch, "job": job_name, "before_mb": before,
            "peak_mb": peak_ru - before, "peak_hwm_mb": peak_hwm - before, "hwm_reset": reset,
            "calls": calls, "allocator": os.environ.get("GLIBC_TUNABLES", "default")}


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------

def profile(name: str, batch: int, kinds: tuple[str, ...], out_dir: Path,
            threads: int = THREADS, warmup: int = 2) -> str:
    import cProfile
    import io
    import pstats

    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    torch.set_num_threads(threads)
    base, layer = build_model(name)
    model_for = _copies(base)
    x = make_input(batch)
    t1, t5 = targets_of(model_for("forward"), x)
    report = io.StringIO()
    jobs = [make_job("forward", "forward", model_for, layer, x, t1, t5)]
    jobs += [make_job("camlens", k, model_for, layer, x, t1, t5) for k in kinds
             if k not in PERTURBATION or batch == 1]
    for job in jobs:
        for _ in range(warmup):
            job()
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            job()
            dt = time.perf_counter() - t0
        report.write(f"\n### {job.name} ({name}, batch {batch}): {dt * 1e3:.0f} ms under the "
                     "profiler\n\n```\n")
        report.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
        report.write("```\n")
        pr = cProfile.Profile()
        pr.enable()
        job()
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(22)
        report.write(f"\ncProfile of {job.name}, by cumulative time:\n\n```\n")
        report.write(re.sub(r"\n\s*\n", "\n", s.getvalue()).strip() + "\n```\n")
    text = report.getvalue()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"profile_{name}_b{batch}.md").write_text(text)
    return text


# --------------------------------------------------------------------------------------------
# orchestration and report
# --------------------------------------------------------------------------------------------

def _child(args: list[str], tunables: bool, omp_wait: str = "PASSIVE",
           timeout: float | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("GLIBC_TUNABLES", None)
    if tunables:
        env["GLIBC_TUNABLES"] = TUNABLES
    if omp_wait:
        env["OMP_WAIT_POLICY"] = omp_wait
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args,
                               "--_result", path], env=env, timeout=timeout)
        if proc.returncode != 0:
            return {"error": f"exit code {proc.returncode}"}
        return json.loads(Path(path).read_text())
    finally:
        os.unlink(path)


def _fmt_ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _fmt_agree(a: dict[str, Any] | None) -> str:
    if not a:
        return ""
    if "error" in a:
        return a["error"]
    return f"{a['max_abs']:.1e} ({a['resolution']})"


def _fmt_load(load: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in load)


def markdown(result: dict[str, Any]) -> str:
    mem = {(m["model"], m["batch"], m["job"]): m for m in result.get("memory", [])
           if "error" not in m}
    lines = [
        "| model | batch | job | library | median ms | x forward | x fwd, paired | peak MB | "
        "x inference | max abs diff vs camlens |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for tm in result["timing"]:
        if "error" in tm:
            lines.append(f"| {tm.get('model', '?')} | | {tm.get('split_kind', '')} error: "
                         f"{tm['error']} | | | | | | | |")
            continue
        for c in tm["configs"]:
            inf = mem.get((tm["model"], c["batch"], "forward:forward"))
            for row in c["rows"]:
                m = mem.get((tm["model"], c["batch"], row["job"]))
                peak = f"{m['peak_mb']:,.0f}" if m else ""
                ratio = (f"{m['peak_mb'] / inf['peak_mb']:.2f}"
                         if m and inf and inf["peak_mb"] > 0 else "")
                lib = row["lib"] if row["lib"] != "forward" else "(inference_mode)"
                lines.append(
                    f"| {tm['model']} | {c['batch']} | {row['kind']} | {lib} | "
                    f"{_fmt_ms(row['median_ms'])} | {row['ratio']:.2f} | "
                    f"{row.get('paired_ratio', 1.0):.2f} | {peak} | {ratio} | "
                    f"{_fmt_agree(row.get('agreement'))} |")
            for job, err in c.get("errors", {}).items():
                lines.append(f"| {tm['model']} | {c['batch']} | {job} | failed: "
                             f"{err[:120]} | | | | | | |")
    notes = [f"- {tm['model']}"
             + (f" ({tm['split_kind']}'s process)" if "split_kind" in tm else "")
             + f", batch {c['batch']}: {c['repeats'] or 'the warm-up call as the one'}"
             f" timed round(s); load average (1, 5, 15 min) "
             + (f"{_fmt_load(c['loadavg_start'])} at the start, " if "loadavg_start" in c else "")
             + f"{_fmt_load(c['loadavg'])} at the end"
             for tm in result["timing"] if "error" not in tm for c in tm["configs"]]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


BAR = (("gradcam", 1.05, "one Grad-CAM map <= 1.05x forward"),
       ("top5", 1.10, "top-5 maps <= 1.10x forward"),
       ("guided", 2.0, "Guided Grad-CAM <= 2.0x forward"))


def verdicts(result: dict[str, Any]) -> str:
    """The issue-3 bar, on ResNet-50 (batch 16; occlusion at batch 1 against captum)."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for tm in result["timing"]:
        if tm.get("model") != "resnet50" or "error" in tm:
            continue
        for c in tm["configs"]:
            for row in c["rows"]:
                rows[(c["batch"], row["job"])] = row
    if not rows:
        return ""
    mem = {(m["batch"], m["job"]): m for m in result.get("memory", [])
           if m.get("model") == "resnet50" and "error" not in m}
    out: list[str] = []

    def ok(flag: bool) -> str:
        return "PASS" if flag else "MISS"

    for kind, limit, text in BAR:
        row = rows.get((16, f"camlens:{kind}"))
        if row:
            out.append(f"- {text}: {row['ratio']:.2f}x (paired {row.get('paired_ratio', 0):.2f}x)"
                       f" -> {ok(row['ratio'] <= limit)}"
                       + ("" if row["ratio"] <= limit else
                          f" (by {100 * (row['ratio'] / limit - 1):.1f}%)"))
    m, inf = mem.get((16, "camlens:gradcam")), mem.get((16, "forward:forward"))
    if m and inf and inf["peak_mb"] > 0:
        r = m["peak_mb"] / inf["peak_mb"]
        out.append(f"- Grad-CAM peak memory <= 1.15x inference: +{m['peak_mb']:.0f} MB vs "
                   f"+{inf['peak_mb']:.0f} MB = {r:.2f}x -> {ok(r <= 1.15)}"
                   + ("" if r <= 1.15 else f" (by {100 * (r / 1.15 - 1):.1f}%)"))
    for b in (16, 1):
        mine, theirs = rows.get((b, "camlens:occlusion")), rows.get((b, "captum:occlusion"))
        if mine and theirs:
            r = mine["median_ms"] / theirs["median_ms"]
            out.append(f"- occlusion at least as fast as captum's (window {OCC_WINDOW}, stride "
                       f"{OCC_STRIDE}, batch {b}): {mine['median_ms']:.0f} ms vs "
                       f"{theirs['median_ms']:.0f} ms = {r:.2f}x (paired, x forward: "
                       f"{mine.get('paired_ratio', 0):.1f} vs "
                       f"{theirs.get('paired_ratio', 0):.1f}) -> "
                       f"{ok(r <= 1.0)}{' (within the ~10% noise)' if 1.0 < r <= 1.1 else ''}")
            break
    return "\n".join(["", "Bar (issue 3), ResNet-50, CPU:", "", *out]) + "\n" if out else ""


def speedups(result: dict[str, Any]) -> str:
    """The issue-14 bar: each of its methods >= 3x faster than every peer that has it, on the
    same model and batch, judged on the paired ratios (peer's paired ratio to the forward pass /
    camlens's), which a load that comes and goes moves less than the medians."""
    out = []
    for tm in result["timing"]:
        if "error" in tm:
            continue
        for c in tm["configs"]:
            rows = {row["job"]: row for row in c["rows"]}
            for kind in FAMILY:
                mine = rows.get(f"camlens:{kind}")
                for lib in ("pytorch-grad-cam", "torchcam"):
                    theirs = rows.get(f"{lib}:{kind}")
                    if mine and theirs:
                        r = theirs["median_ms"] / mine["median_ms"]
                        rp = theirs["paired_ratio"] / mine["paired_ratio"]
                        out.append(f"- {tm['model']}, batch {c['batch']}, {kind}: {lib} "
                                   f"{theirs['paired_ratio']:.2f}x forward / camlens "
                                   f"{mine['paired_ratio']:.2f}x = {rp:.2f}x (medians: "
                                   f"{theirs['median_ms']:.0f} ms / {mine['median_ms']:.0f} ms"
                                   f" = {r:.2f}x) -> {'PASS' if rp >= 3 else 'MISS'}")
    return "\n".join(["", "Bar (issue 14): >= 3x faster than each peer, CPU:", "", *out]) + "\n" \
        if out else ""


def environment() -> dict[str, Any]:
    import torch

    import camlens

    src = Path(camlens.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        head, dirty = "", ""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() \
            else []:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": model or platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
            "platform": platform.platform(), "camlens_commit": head,
            "camlens_src_modified": bool(dirty)}


def main(argv: list[str] | None = None) -> int:
    global SIZE  # --size, set in the child processes
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None,
                   help=f"comma-separated, from {','.join(MODELS)} (default: all but resnet18; "
                        "--quick: "
                        f"{','.join(QUICK_MODELS)})")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated (default 1,16)")
    p.add_argument("--jobs", default=",".join(KINDS),
                   help=f"comma-separated job kinds, from {','.join(ALL_KINDS)} (default: "
                        f"{','.join(KINDS)}; forward always runs)")
    p.add_argument("--libs", default=",".join(LIBS),
                   help=f"comma-separated libraries, from {', '.join(HAS)} (default: "
                        f"{','.join(LIBS)}; camlens-cl = camlens with channels_last=True)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per model and batch (default 5; --quick: 3), fewer where "
                        "a round is slow (see --budget), never fewer than --min-repeats; "
                        "0 (with --min-repeats 0): the last warm-up call of each job is its one "
                        "sample, paired with a forward pass timed just before it (for jobs of "
                        "minutes, e.g. Score-CAM)")
    p.add_argument("--min-repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed rounds per model and batch (default 150; --quick 90)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls per job first (default 1; --profile: 2)")
    p.add_argument("--occlusion-batches", default="1",
                   help="batch sizes that run the perturbation jobs (occlusion, scorecam, "
                        "ablationcam)")
    p.add_argument("--quick", action="store_true",
                   help="resnet50 + bundled model, batch 1 and 16, 3 rounds")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    p.add_argument("--pair-forwards", type=int, default=1,
                   help="forward passes timed before each call, their median its pair (1)")
    p.add_argument("--split", action="store_true",
                   help="one timing process per job kind, each pairing its calls with its own "
                        "forward passes (peak memory of one method's model copies, not all; "
                        "the results so far are written after each process)")
    p.add_argument("--mem-calls", type=int, default=1,
                   help="calls per peak-memory process (the previous result kept alive)")
    p.add_argument("--mem-workers", type=int, default=2,
                   help="peak-memory processes run at once (memory does not depend on speed)")
    p.add_argument("--allocator", choices=("stable", "default"), default="stable",
                   help="timing processes: 'stable' sets GLIBC_TUNABLES=" + TUNABLES)
    p.add_argument("--threads", type=int, default=THREADS, help="torch.set_num_threads (2)")
    p.add_argument("--size", type=int, default=SIZE,
                   help=f"image side in pixels (default {SIZE}; smaller for smoke runs)")
    p.add_argument("--omp-wait-policy", default="PASSIVE",
                   help="OMP_WAIT_POLICY of the child processes (default PASSIVE: on a shared "
                        "2-core machine spinning OpenMP threads slowed a forward pass up to 30x; "
                        "'' leaves it unset)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="merge earlier result files into OUT.json/OUT.md instead of running")
    p.add_argument("--profile", action="store_true",
                   help="instead of the benchmark: torch.profiler and cProfile tables of "
                        "camlens's jobs and the forward pass (first model and batch size)")
    p.add_argument("--out", default=str(HERE / "results" / "latest"),
                   help="write OUT.json and OUT.md (default benchmarks/results/latest)")
    # internal: child processes
    p.add_argument("--_timing", help=argparse.SUPPRESS)
    p.add_argument("--_memory", help=argparse.SUPPRESS)
    p.add_argument("--_profile", help=argparse.SUPPRESS)
    p.add_argument("--_config", help=argparse.SUPPRESS)
    p.add_argument("--_result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a._timing or a._memory or a._profile:
        cfg = json.loads(a._config)
        SIZE = cfg.get("size", SIZE)
        if a._timing:
            res = time_model(a._timing, cfg)
            res["allocator"] = os.environ.get("GLIBC_TUNABLES", "default")
            res["environment"] = environment()
        elif a._memory:
            name, batch, job = a._memory.split("|")
            res = memory_job(name, int(batch), job, cfg["mem_calls"], cfg["threads"])
        else:
            name, batch = a._profile.split("|")
            text = profile(name, int(batch), tuple(cfg["kinds"]), Path(cfg["out_dir"]),
                           cfg["threads"], cfg["warmup"])
            print(text)
            res = {"allocator": os.environ.get("GLIBC_TUNABLES", "default")}
        Path(a._result).write_text(json.dumps(res))
        return 0

    models = (a.models.split(",") if a.models else
              list(QUICK_MODELS) if a.quick else [m for m in MODELS if m != "resnet18"])
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    kinds = [k for k in a.jobs.split(",") if k and k != "forward"]
    libs = a.libs.split(",")
    for k in kinds:
        if k not in ALL_KINDS:
            p.error(f"unknown job {k!r}; choose from {', '.join(ALL_KINDS)}")
    for lib in libs:
        if lib not in HAS:
            p.error(f"unknown library {lib!r}; choose from {', '.join(HAS)}")
    cfg = {
        "batch_sizes": [int(b) for b in a.batch_sizes.split(",")],
        "kinds": kinds, "libs": libs,
        "repeats": a.repeats if a.repeats is not None else (3 if a.quick else 5),
        "min_repeats": a.min_repeats,
        "budget": a.budget or (90.0 if a.quick else 150.0),
        "warmup": a.warmup if a.warmup is not None else 2 if a.profile else 1,
        "occlusion_batches": [int(b) for b in a.occlusion_batches.split(",") if b],
        "mem_calls": a.mem_calls,
        "threads": a.threads,
        "size": a.size,
        "pair_forwards": max(1, a.pair_forwards),
        "out_dir": str(Path(a.out).parent),
    }
    tunables = a.allocator == "stable"
    omp = a.omp_wait_policy
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        result = dict(parts[0])
        result["command"] = " + ".join(r["command"] for r in parts)
        result["timing"] = [t for r in parts for t in r["timing"]]
        result["memory"] = [m for r in parts for m in r["memory"]]
        result["seconds"] = {k: sum(r["seconds"][k] for r in parts) for k in ("timing", "total")}
        _write(result, Path(a.out))
        return 0
    if a.profile:
        res = _child(["--_profile", f"{models[0]}|{cfg['batch_sizes'][0]}",
                      "--_config", json.dumps(cfg)], tunables, omp)
        return 0 if "error" not in res else 1

    t_start = time.time()
    print(f"timing processes: GLIBC_TUNABLES={TUNABLES if tunables else '(unset)'}; "
          f"OMP_WAIT_POLICY={omp or '(unset)'}; torch threads {a.threads}",
          file=sys.stderr, flush=True)
    timing: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    command = " ".join([Path(sys.executable).name, "benchmarks/run.py",
                        *(argv if argv is not None else sys.argv[1:])])

    def result_now(t_timing: float) -> dict[str, Any]:
        return {
            "command": command, "config": cfg,
            "timing_allocator": TUNABLES if tunables else "default",
            "memory_allocator": "default",
            "omp_wait_policy": omp or "(unset)",
            "environment": next((t["environment"] for t in timing if "environment" in t), None),
            "timing": timing, "memory": memory,
            "seconds": {"timing": round(t_timing), "total": round(time.time() - t_start)},
        }

    # --split: one timing process per job kind (each with its own forward pass), so a process
    # holds one method's model copies and graphs, not every peer's at once
    groups = [[k] for k in kinds] if a.split else [kinds]
    for name in models:
        for group in groups:
            res = _child(["--_timing", name, "--_config", json.dumps({**cfg, "kinds": group})],
                         tunables, omp)
            res.setdefault("model", name)
            if a.split:
                res["split_kind"] = group[0]
            timing.append(res)
            if a.split:  # what is done so far survives a run that is stopped
                _write(result_now(time.time() - t_start), Path(a.out), quiet=True)
    t_timing = time.time() - t_start
    if not a.no_memory:
        tasks = [(name, b, f"{lib}:{kind}") for name in models for b in cfg["batch_sizes"]
                 for lib, kind in [("forward", "forward")]
                 + jobs_for(b, tuple(kinds), tuple(libs), tuple(cfg["occlusion_batches"]))]
        print(f"[memory] {len(tasks)} processes, default allocator", file=sys.stderr, flush=True)

        def run_one(task: tuple[str, int, str]) -> dict[str, Any]:
            name, b, job = task
            res = _child(["--_memory", f"{name}|{b}|{job}", "--_config", json.dumps(cfg)],
                         tunables=False, omp_wait=omp)
            res.update({"model": name, "batch": b, "job": job})
            return res

        with ThreadPoolExecutor(max(1, a.mem_workers)) as pool:
            memory.extend(pool.map(run_one, tasks))
    _write(result_now(t_timing), Path(a.out))
    return 0


def _write(result: dict[str, Any], out: Path, quiet: bool = False) -> None:
    table = markdown(result) + verdicts(result) + speedups(result)
    if not quiet:
        print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=1))
    Path(f"{out}.md").write_text(table)
    print(f"wrote {out}.json and {out}.md ({result['seconds']['total']} s)", file=sys.stderr,
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
