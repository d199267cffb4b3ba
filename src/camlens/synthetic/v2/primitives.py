"""Geometric primitives of world v2 and their exact, vectorised rasterisation.

A primitive lives in an object's local frame (u to the right, v downwards, the object spans
about [-1, 1]); a pixel belongs to it when its centre does (no anti-aliasing, so every pixel
has exactly one owner). Kinds and their parameters:

- ``ellipse``: (cx, cy, rx, ry, theta), theta the rotation of the rx axis (radians);
- ``rect``: (cx, cy, half_width, half_height, theta);
- ``poly``: the vertices (x0, y0, x1, y1, ...) of a convex polygon, either orientation;
- ``capsule``: (x0, y0, x1, y1, r), the points within r of the segment;
- ``ring``: (cx, cy, r_outer, r_inner).

:func:`extent` gives a primitive's exact axis-aligned extent after a rotation, so a scene can
size an object's box before rasterising it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Prim", "ellipse", "rect", "poly", "capsule", "ring", "inside", "extent"]


@dataclass(frozen=True)
class Prim:
    """One primitive: ``kind`` and its parameters (see the module docstring)."""

    kind: str
    params: tuple[float, ...]


def ellipse(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> Prim:
    return Prim("ellipse", (cx, cy, rx, ry, theta))


def rect(cx: float, cy: float, hw: float, hh: float, theta: float = 0.0) -> Prim:
    return Prim("rect", (cx, cy, hw, hh, theta))


def poly(*xy: float) -> Prim:
    if len(xy) < 6 or len(xy) % 2:
        raise ValueError(f"a polygon needs at least 3 (x, y) vertices, got {len(xy)} numbers")
    return Prim("poly", tuple(float(v) for v in xy))


def capsule(x0: float, y0: float, x1: float, y1: float, r: float) -> Prim:
    return Prim("capsule", (x0, y0, x1, y1, r))


def ring(cx: float, cy: float, r_outer: float, r_inner: float) -> Prim:
    return Prim("ring", (cx, cy, r_outer, r_inner))


def inside(p: Prim, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean array: which points (u, v) (same shape) lie in ``p`` (boundary included)."""
    k, q = p.kind, p.params
    if k == "ellipse" or k == "rect":
        cx, cy, a, b, th = q
        du, dv = u - cx, v - cy
        if th:
            c, s = np.cos(th), np.sin(th)
            du, dv = c * du + s * dv, -s * du + c * dv
        if k == "ellipse":
            return (du / a) ** 2 + (dv / b) ** 2 <= 1.0
        return (np.abs(du) <= a) & (np.abs(dv) <= b)
    if k == "poly":
        xs, ys = np.asarray(q[0::2]), np.asarray(q[1::2])
        area2 = float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys))
        sign = 1.0 if area2 >= 0 else -1.0
        out = np.ones(u.shape, dtype=bool)
        for i in range(len(xs)):
            x0, y0, x1, y1 = xs[i], ys[i], xs[(i + 1) % len(xs)], ys[(i + 1) % len(ys)]
            out &= sign * ((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)) >= 0.0
        return out
    if k == "capsule":
        x0, y0, x1, y1, r = q
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((u - x0) * dx + (v - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        return (u - x0 - t * dx) ** 2 + (v - y0 - t * dy) ** 2 <= r * r
    if k == "ring":
        cx, cy, ro, ri = q
        d2 = (u - cx) ** 2 + (v - cy) ** 2
        return (d2 <= ro * ro) & (d2 >= ri * ri)
    raise ValueError(f"unknown primitive kind {k!r}")


def _rot(x: np.ndarray, y: np.ndarray, th: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(th), np.sin(th)
    return c * x - s * y, s * x + c * y


def extent(p: Prim, angle: float = 0.0, flip: bool = False) -> tuple[float, float, float, float]:
    """(xmin, ymin, xmax, ymax) of ``p`` after mirroring u (``flip``) then rotating by ``angle``.

    Exact for every kind (the rotated ellipse's half extents are
    sqrt((a cos t)^2 + (b sin t)^2) and sqrt((a sin t)^2 + (b cos t)^2) with t its total angle).
    """
    k, q = p.kind, p.params
    m = -1.0 if flip else 1.0
    if k in ("ellipse", "rect"):
        cx, cy, a, b, th = q
        x, y = _rot(np.array([m * cx]), np.array([cy]), angle)
        t = angle + (np.pi - th if flip else th)
        if k == "ellipse":
            hx = float(np.hypot(a * np.cos(t), b * np.sin(t)))
            hy = float(np.hypot(a * np.sin(t), b * np.cos(t)))
        else:
            hx = float(abs(a * np.cos(t)) + abs(b * np.sin(t)))
            hy = float(abs(a * np.sin(t)) + abs(b * np.cos(t)))
        return float(x[0]) - hx, float(y[0]) - hy, float(x[0]) + hx, float(y[0]) + hy
    if k == "poly":
        x, y = _rot(m * np.asarray(q[0::2]), np.asarray(q[1::2]), angle)
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())
    if k == "capsule":
        x, y = _rot(m * np.array([q[0], q[2]]), np.array([q[1], q[3]]), angle)
        r = q[4]
        return float(x.min()) - r, float(y.min()) - r, float(x.max()) + r, float(y.max()) + r
    if k == "ring":
        x, y = _rot(np.array([m * q[0]]), np.array([q[1]]), angle)
        r = q[2]
        return float(x[0]) - r, float(y[0]) - r, float(x[0]) + r, float(y[0]) + r
    raise ValueError(f"unknown primitive kind {k!r}")
