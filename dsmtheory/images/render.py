"""Differentiable, anti-aliased drawing primitives for small grayscale images (THEORY §7).

Coordinates are in *image units*: the image is the unit square, u (column) and v
(row) both in [0, 1], v pointing down. A task's features and σ_r therefore do not
depend on the resolution; only the renderer knows the pixel grid.

Anti-aliasing. A shape's indicator is convolved with an isotropic Gaussian edge
of standard deviation `blur_px` pixels ("soft edges at pixel resolution") and the
result is integrated over each pixel (box filter). For an axis-aligned rectangle
both steps are exact and separable: along one axis the pixel [i, i+1] receives

    ∫_i^{i+1} [Φ((hi − s)/w) − Φ((lo − s)/w)] ds
        = G(hi − i) − G(hi − i − 1) − G(lo − i) + G(lo − i − 1),
    G(a) = a Φ(a/w) + w φ(a/w)        (the antiderivative of Φ(a/w)),

so the pixel values telescope: a rectangle fully inside the image has pixel sum
exactly equal to its area in px² whatever its sub-pixel position. The extractors
rely on this (lengths from sums are exact on clean renders). Everything is smooth
(C∞) in the shape parameters, so renders can be differentiated with jax.grad.

Discs (non-separable) are point-sampled at pixel centres: Φ((r − d)/w) with d the
distance from the pixel centre to the disc's centre; they are symmetric about
their centre, so their intensity centroid is their centre up to an aliasing term
that the Gaussian edge makes negligible (measured in tests/test_images.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtr

Array = jax.Array

_INV_SQRT_2PI = 0.3989422804014327


def _edge_antiderivative(a: Array, w: float) -> Array:
    """G(a) = a Φ(a/w) + w φ(a/w), the antiderivative of the blurred step Φ(a/w)."""
    s = a / w
    return a * ndtr(s) + w * _INV_SQRT_2PI * jnp.exp(-0.5 * s * s)


def interval_profile(lo: Array, hi: Array, n: int, blur_px: float) -> Array:
    """Coverage of the pixels 0..n−1 by the blurred interval [lo, hi] (both in pixels).

    Exact box-filtered Gaussian-edged interval; sums to hi − lo when the interval
    and its blur lie inside [0, n]. Broadcasts over leading dims of lo/hi -> [..., n].
    """
    lo = jnp.asarray(lo)[..., None]
    hi = jnp.asarray(hi)[..., None]
    lo, hi = jnp.broadcast_arrays(lo, hi)
    i = jnp.arange(n, dtype=jnp.result_type(lo, jnp.float32))
    # one evaluation of G on the four stacked arguments (a smaller program to compile)
    g = _edge_antiderivative(jnp.stack([hi - i, hi - i - 1.0, lo - i, lo - i - 1.0]), blur_px)
    return g[0] - g[1] - g[2] + g[3]


def rect(u0: Array, u1: Array, v0: Array, v1: Array, size: int, blur_px: float) -> Array:
    """Blurred, box-filtered rectangle [u0, u1] × [v0, v1] (image units) -> [size, size].

    The pixel values sum to the rectangle's area in px² (exact) when it lies inside."""
    u0, u1, v0, v1 = jnp.broadcast_arrays(*(jnp.asarray(a) for a in (u0, u1, v0, v1)))
    # rows and columns in one profile evaluation
    prof = interval_profile(jnp.stack([u0, v0]) * size, jnp.stack([u1, v1]) * size, size, blur_px)
    cols, rows = prof[0], prof[1]
    return rows[..., :, None] * cols[..., None, :]


def disc(cu: Array, cv: Array, radius: Array, size: int, blur_px: float) -> Array:
    """Soft disc of centre (cu, cv) and radius (image units), sampled at pixel centres."""
    centres = (jnp.arange(size) + 0.5) / size
    du = centres[None, :] - jnp.asarray(cu)[..., None, None]
    dv = centres[:, None] - jnp.asarray(cv)[..., None, None]
    dist_px = jnp.sqrt(du * du + dv * dv + 1e-12) * size
    return ndtr((jnp.asarray(radius)[..., None, None] * size - dist_px) / blur_px)


def pixel_centres(size: int) -> Array:
    """Centres of the pixels along one axis, in image units: (i + 0.5)/size."""
    return (jnp.arange(size, dtype=jnp.float32) + 0.5) / size
