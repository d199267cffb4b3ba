"""Two-tone textures of world v2, evaluated in an object's local frame (so they turn and
scale with it): a texture says which pixels of a part take its second tone.

Textures and their parameters (``period`` in local units, the object spanning about 2):

- ``plain``: no second tone;
- ``striped`` / ``banded``: (period, angle, duty, phase): the second tone where
  frac((u cos a + v sin a) / period + phase) < duty (``banded``: broad bands);
- ``spotted``: (period, radius, phase_u, phase_v): disks of radius ``radius * period`` on a
  square lattice;
- ``checkered``: (period, angle, phase_u, phase_v);
- ``patched``: (k1u, k1v, p1, k2u, k2v, p2, threshold): irregular patches where
  sin(k1 . (u, v) + p1) + sin(k2 . (u, v) + p2) > threshold.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TEXTURE_KINDS", "second_tone", "sample_params"]

#: Texture names an object part can carry (the background adds its own, see world.py).
TEXTURE_KINDS = ("plain", "striped", "banded", "spotted", "checkered", "patched")


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def second_tone(kind: str, params: tuple[float, ...], u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean array: which points (u, v) take the second tone of texture ``kind``."""
    if kind == "plain":
        return np.zeros(u.shape, dtype=bool)
    if kind in ("striped", "banded"):
        period, angle, duty, phase = params
        w = u * np.cos(angle) + v * np.sin(angle)
        return _frac(w / period + phase) < duty
    if kind == "spotted":
        period, radius, pu, pv = params
        du, dv = _frac(u / period + pu) - 0.5, _frac(v / period + pv) - 0.5
        return du * du + dv * dv < radius * radius
    if kind == "checkered":
        period, angle, pu, pv = params
        c, s = np.cos(angle), np.sin(angle)
        a = np.floor((c * u + s * v) / period + pu)
        b = np.floor((-s * u + c * v) / period + pv)
        return (a + b) % 2 == 1
    if kind == "patched":
        k1u, k1v, p1, k2u, k2v, p2, thr = params
        return np.sin(k1u * u + k1v * v + p1) + np.sin(k2u * u + k2v * v + p2) > thr
    raise ValueError(f"unknown texture {kind!r}; choose from {TEXTURE_KINDS}")


def sample_params(
    rng: np.random.Generator, kind: str, period: tuple[float, float], coverage: tuple[float, float]
) -> tuple[float, ...]:
    """Random parameters of ``kind``: ``period`` range (local units), ``coverage`` range of the
    second tone's share (duty of stripes, threshold of patches)."""
    if kind == "plain":
        return ()
    p = float(rng.uniform(*period))
    if kind in ("striped", "banded"):
        angle = float(rng.uniform(-0.35, 0.35)) + (0.0 if kind == "banded" else np.pi / 2)
        return (p, angle, float(rng.uniform(*coverage)), float(rng.uniform(0, 1)))
    pu, pv = float(rng.uniform(0, 1)), float(rng.uniform(0, 1))
    if kind == "spotted":
        return (p, float(rng.uniform(0.18, 0.32)), pu, pv)
    if kind == "checkered":
        return (p, float(rng.uniform(-0.3, 0.3)), pu, pv)
    if kind == "patched":
        k = 2 * np.pi / p
        a1, a2 = rng.uniform(0, np.pi, size=2)
        # coverage c of the second tone: sum of two sines exceeds thr on roughly (1 - c) ... c
        thr = float(np.interp(rng.uniform(*coverage), [0.0, 1.0], [1.6, -1.6]))
        return (k * np.cos(a1), k * np.sin(a1), float(rng.uniform(0, 2 * np.pi)),
                k * np.cos(a2), k * np.sin(a2), float(rng.uniform(0, 2 * np.pi)), thr)
    raise ValueError(f"unknown texture {kind!r}; choose from {TEXTURE_KINDS}")
