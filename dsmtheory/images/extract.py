"""Analytic feature-extraction helpers: masses, intensity centroids and windowed
centroids of image regions (THEORY §7). No learned parameters anywhere.

Images are [..., size, size] arrays of pixel intensities (1 = full coverage) and
coordinates are image units (see render.py). Two facts the task extractors use:

- mass: Σ pixels / size² over a region is the area (image units²) of what was
  drawn there, exactly, because the box-filtered Gaussian-edged rectangles of
  render.py telescope (their blur stays inside the region by construction);
- centroid: the intensity-weighted mean of the pixel centres is the centre of a
  symmetric shape; restricting the sum to a window around a first estimate keeps
  pixel noise far from the shape out of the estimate (noise enters a centroid
  weighted by the distance to the centre, so a big region amplifies it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dsmtheory.images.render import pixel_centres

Array = jax.Array

_TINY_MASS = 1e-6  # image units²; below this a region is "empty" (0.0006 px² at 24×24)


def region_mask(size: int, rows: tuple[float, float], cols: tuple[float, float]) -> Array:
    """Boolean [size, size] mask of the pixels whose centres lie in rows × cols (image units)."""
    c = pixel_centres(size)
    in_rows = (c >= rows[0]) & (c < rows[1])
    in_cols = (c >= cols[0]) & (c < cols[1])
    return in_rows[:, None] & in_cols[None, :]


def region_mass(images: Array, mask: Array) -> Array:
    """Σ_{pixels in mask} intensity / size²: drawn area (image units²) -> [...]."""
    size = images.shape[-1]
    return jnp.sum(images * mask, axis=(-2, -1)) / size**2


def _centroid(images: Array, weights_mask: Array, fallback_u: Array, fallback_v: Array):
    size = images.shape[-1]
    c = pixel_centres(size)
    w = images * weights_mask
    mass = jnp.sum(w, axis=(-2, -1))
    ok = jnp.abs(mass) > _TINY_MASS * size**2
    safe = jnp.where(ok, mass, 1.0)
    cu = jnp.where(ok, jnp.sum(w * c[None, :], axis=(-2, -1)) / safe, fallback_u)
    cv = jnp.where(ok, jnp.sum(w * c[:, None], axis=(-2, -1)) / safe, fallback_v)
    return cu, cv, mass / size**2


def windowed_centroid(
    images: Array,
    mask: Array,
    half_window: float | tuple[float, float],
    n_refine: int = 2,
    rows: tuple[float, float] | None = None,
    cols: tuple[float, float] | None = None,
) -> tuple[Array, Array, Array]:
    """Intensity centroid (cu, cv) and mass of the shape inside `mask`, refined
    `n_refine` times over the window |u − cu| ≤ h_u, |v − cv| ≤ h_v (image units;
    `half_window` is h or (h_u, h_v)) around the previous estimate. Estimates are clipped to the
    region's bounding box `rows` × `cols` (when given) so that an image with no
    shape there (e.g. a poor generated sample) still gives a finite answer.
    Returns three arrays of shape images.shape[:-2]."""
    size = images.shape[-1]
    c = pixel_centres(size)
    batch = images.shape[:-2]
    h_u, h_v = tuple(half_window) if isinstance(half_window, (tuple, list)) else (half_window, half_window)
    r0, r1 = rows if rows is not None else (0.0, 1.0)
    c0, c1 = cols if cols is not None else (0.0, 1.0)
    mid_u = jnp.full(batch, 0.5 * (c0 + c1))
    mid_v = jnp.full(batch, 0.5 * (r0 + r1))
    cu, cv, mass = _centroid(images, mask, mid_u, mid_v)
    cu, cv = jnp.clip(cu, c0, c1), jnp.clip(cv, r0, r1)
    for _ in range(n_refine):
        win_u = jnp.abs(c[None, :] - cu[..., None, None]) <= h_u
        win_v = jnp.abs(c[:, None] - cv[..., None, None]) <= h_v
        cu, cv, mass = _centroid(images, mask & win_u & win_v, cu, cv)
        cu, cv = jnp.clip(cu, c0, c1), jnp.clip(cv, r0, r1)
    return cu, cv, mass
