"""The four synthetic image tasks of THEORY §7: a feature family (cause x, effect
y = f(x) + σ_r ε, nuisance features), a differentiable anti-aliased renderer, and
an analytic extractor that reads (x̂, ŷ) back from the pixels.

| task         | x (cause)                          | y (effect)                       | rule f                      |
|--------------|------------------------------------|----------------------------------|-----------------------------|
| shadow       | sun elevation θ (radians)          | shadow length of the pole        | Shadow(h): h·cot θ          |
| reflection   | object's centre row (above mirror) | reflection's centre row          | Reflection(c): 2c − x       |
| ratio        | length of bar 1                    | length of bar 2                  | Ratio(r): r·x               |
| perspective  | depth of a post beyond the near    | apparent height of the post      | Perspective(s, 1): s/(x+1)  |
|              | plane (camera heights)             |                                  |                             |

Lengths and positions are in image units (the image is the unit square, rows
pointing down), so the features, the rule and σ_r do not depend on the
resolution. Every σ_r is ≈5% of the range of f(x) over the sampled x: a
fine-grained rule (the trend spans ~20 σ_r), at 24×24 pixels σ_r is ≈0.25–0.36 px,
so the rule lives at the sub-pixel scale that the anti-aliasing makes visible.

Default size 24×24 (P = 576), the smallest accepted. At 16×16 the shapes are 2–3 px
across, the measurement bands (fixed in image units) cut through the blurred edges
(the shadow's length error reached 0.9 σ_r) and pixel noise of 0.01 moves the
features by ≈0.3–0.6 σ_r; at 32×32 the extractors are ≈2× less noise-sensitive but
an MLP score network's cost (∝ P) grows by 1.8×. Sizes 24–32 are accepted (errors
at 32 measured: clean < 0.005 σ_r, noise 0.01 → RMS ≤ 0.16 σ_r).

Images hold intensities in [0, ~1] (0 = dark background); `to_data` maps them to
z = 2·image − 1 ∈ [−1, 1]^P, the scale the diffusion schedules assume.
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from dsmtheory._pytree import PyTreeNode, field

from dsmtheory._validation import check_choice, check_int, check_positive
from dsmtheory.images.extract import region_mask, region_mass, windowed_centroid
from dsmtheory.images.render import disc, rect
from dsmtheory.rules import Perspective, Ratio, Reflection, Rule, Shadow

Array = jax.Array


class ImageTask(PyTreeNode):
    """Base class. A subclass defines the geometry (ClassVars), `sample_features`,
    `render_one` (one image from scalar features) and `extract` (images -> x̂, ŷ)."""

    size: int = field(pytree_node=False, default=24)
    blur_px: float = field(pytree_node=False, default=0.5)

    name: ClassVar[str] = "abstract"
    x_label: ClassVar[str] = "x"
    y_label: ClassVar[str] = "y"
    nuisance_names: ClassVar[tuple[str, ...]] = ()
    dx: ClassVar[int] = 1
    dy: ClassVar[int] = 1

    def _check_common(self) -> None:
        check_int("size", self.size, minimum=24, maximum=32)
        check_positive("blur_px", self.blur_px)
        if self.blur_px > 1.5:
            raise ValueError(f"blur_px must be <= 1.5 pixels, got {self.blur_px}")
        check_positive("sigma_r", self.sigma_r)

    # --- shape information ---------------------------------------------------------
    @property
    def dim(self) -> int:
        """P = size², the length of a flattened image."""
        return self.size * self.size

    @property
    def rule(self) -> Rule:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- the feature family ----------------------------------------------------------
    def sample_features(self, key: Array, n: int) -> tuple[Array, Array, Array]:
        """(x [n], y [n], nuisance [n, len(nuisance_names)]) with y = f(x) + σ_r ε."""
        n = check_int("n", n, minimum=1)
        kx, ke, kn = jax.random.split(key, 3)
        x = self._sample_x(kx, n)
        y = self.rule.scalar(x) + self.sigma_r * jax.random.normal(ke, (n,))
        return x, y, self._sample_nuisance(kn, n)

    def _sample_x(self, key, n):  # pragma: no cover - abstract
        raise NotImplementedError

    def _sample_nuisance(self, key, n):
        lo, hi = (jnp.asarray(b, jnp.float32) for b in zip(*self.nuisance_ranges))
        return jax.random.uniform(key, (n, len(self.nuisance_names)), minval=lo, maxval=hi)

    def residual(self, x: Array, y: Array) -> Array:
        """r = y − f(x) (THEORY §4)."""
        return y - self.rule.scalar(x)

    # --- rendering --------------------------------------------------------------------
    def render_one(self, x: Array, y: Array, nuisance: Array) -> Array:  # pragma: no cover
        raise NotImplementedError

    def render(self, x: Array, y: Array, nuisance: Array) -> Array:
        """Images [..., size, size] for features x [...], y [...], nuisance [..., k]."""
        x, y, nuisance = jnp.asarray(x), jnp.asarray(y), jnp.asarray(nuisance)
        batch = jnp.broadcast_shapes(x.shape, y.shape, nuisance.shape[:-1])
        k = nuisance.shape[-1]
        if k != len(self.nuisance_names):
            raise ValueError(f"nuisance must have last dimension {len(self.nuisance_names)} "
                             f"({', '.join(self.nuisance_names)}), got shape {nuisance.shape}")
        flat = _render_flat(
            self,
            jnp.broadcast_to(x, batch).reshape(-1),
            jnp.broadcast_to(y, batch).reshape(-1),
            jnp.broadcast_to(nuisance, batch + (k,)).reshape(-1, k),
        )
        return flat.reshape(batch + (self.size, self.size))

    def sample(self, key: Array, n: int) -> tuple[Array, Array, Array, Array]:
        """(images [n, size, size], x [n], y [n], nuisance [n, k])."""
        x, y, nuis = self.sample_features(key, n)
        return self.render(x, y, nuis), x, y, nuis

    # --- images <-> diffusion data ------------------------------------------------------
    def to_data(self, images: Array) -> Array:
        """[..., size, size] intensities -> [..., P] in [−1, 1] (z = 2·image − 1)."""
        images = jnp.asarray(images)
        if images.shape[-2:] != (self.size, self.size):
            raise ValueError(f"images must end in ({self.size}, {self.size}), got shape {images.shape}")
        return 2.0 * images.reshape(images.shape[:-2] + (self.dim,)) - 1.0

    def from_data(self, z: Array) -> Array:
        """Inverse of `to_data`: [..., P] -> [..., size, size] intensities."""
        z = jnp.asarray(z)
        if z.shape[-1] != self.dim:
            raise ValueError(f"z must have last dimension {self.dim} (= size²), got shape {z.shape}")
        return (0.5 * (z + 1.0)).reshape(z.shape[:-1] + (self.size, self.size))

    # --- measurement ---------------------------------------------------------------------
    def extract(self, images: Array) -> tuple[Array, Array]:
        """(x̂, ŷ), each of shape images.shape[:-2], measured from the pixels alone
        (the task's `_extract`, compiled once per task type and batch shape)."""
        return _extract_jit(self, self._check_images(images))

    def _extract(self, images: Array) -> tuple[Array, Array]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_images(self, images) -> Array:
        images = jnp.asarray(images)
        if images.ndim < 2 or images.shape[-2:] != (self.size, self.size):
            raise ValueError(f"images must have shape [..., {self.size}, {self.size}], got {images.shape}")
        return images

    @property
    def _px(self) -> float:
        """One pixel in image units."""
        return 1.0 / self.size

    def to_config(self) -> dict:
        return {
            "name": self.name,
            "size": self.size,
            "blur_px": float(self.blur_px),
            "sigma_r": float(self.sigma_r),
            "rule": self.rule.to_config(),
            "x_range": [float(v) for v in self.x_range],
            "y_range_of_f": [float(v) for v in self.f_range],
            "nuisance": {n: [float(a), float(b)] for n, (a, b) in zip(self.nuisance_names, self.nuisance_ranges)},
        }

    @property
    def f_range(self) -> tuple[float, float]:
        """(min, max) of f over x_range (f is monotone for all four tasks)."""
        a, b = (float(self.rule.scalar(jnp.asarray(v, jnp.float32))) for v in self.x_range)
        return (min(a, b), max(a, b))


# ---------------------------------------------------------------------------------------
class ShadowTask(ImageTask):
    """Sun elevation θ -> shadow length L = h·cot θ of a pole of height h (similar triangles).

    Dark sky, grey ground below the ground line, a white pole standing on it at the
    right, its (black) shadow on the ground pointing left, away from the sun, and
    the sun as a white disc in the sky whose row encodes θ linearly (θ_hi at the top
    of its track, θ_lo at the bottom). Nuisances: the sun's column, the pole's column.
    """

    sigma_r: float = 0.015
    name: ClassVar[str] = "shadow"
    x_label: ClassVar[str] = "sun elevation θ (rad)"
    y_label: ClassVar[str] = "shadow length (image widths)"
    nuisance_names: ClassVar[tuple[str, ...]] = ("sun_u", "pole_u")
    nuisance_ranges: ClassVar[tuple] = ((0.10, 0.40), (0.80, 0.88))
    x_range: ClassVar[tuple[float, float]] = (math.radians(30.0), math.radians(60.0))
    POLE_HEIGHT: ClassVar[float] = 0.25
    POLE_WIDTH: ClassVar[float] = 0.05
    GROUND_V: ClassVar[float] = 0.72
    GROUND_LEVEL: ClassVar[float] = 0.6
    SHADOW_THICKNESS: ClassVar[float] = 0.10
    SUN_RADIUS: ClassVar[float] = 0.06
    SUN_V_AT_THETA_HI: ClassVar[float] = 0.14
    SUN_V_AT_THETA_LO: ClassVar[float] = 0.50
    # measurement regions (rows, cols), image units; see `extract`
    SUN_REGION: ClassVar[tuple] = ((0.0, 0.655), (0.0, 0.62))
    SHADOW_REGION: ClassVar[tuple] = ((0.66, 0.90), (0.22, 0.98))

    def __post_init__(self):
        self._check_common()

    @property
    def rule(self) -> Rule:
        return Shadow(height=self.POLE_HEIGHT)

    def _sample_x(self, key, n):
        lo, hi = self.x_range
        return jax.random.uniform(key, (n,), minval=lo, maxval=hi)

    def sun_row(self, theta):
        lo, hi = self.x_range
        frac = (hi - theta) / (hi - lo)
        return self.SUN_V_AT_THETA_HI + frac * (self.SUN_V_AT_THETA_LO - self.SUN_V_AT_THETA_HI)

    def theta_from_sun_row(self, v):
        lo, hi = self.x_range
        frac = (v - self.SUN_V_AT_THETA_HI) / (self.SUN_V_AT_THETA_LO - self.SUN_V_AT_THETA_HI)
        return hi - frac * (hi - lo)

    def _ground(self):
        return self.GROUND_LEVEL * rect(-0.3, 1.3, self.GROUND_V, 1.3, self.size, self.blur_px)

    def _pole(self, pole_u):
        half = 0.5 * self.POLE_WIDTH
        return rect(pole_u - half, pole_u + half, self.GROUND_V - self.POLE_HEIGHT, self.GROUND_V,
                    self.size, self.blur_px)

    def render_one(self, x, y, nuisance):
        sun_u, pole_u = nuisance[0], nuisance[1]
        sun = disc(sun_u, self.sun_row(x), self.SUN_RADIUS, self.size, self.blur_px)
        # the shadow darkens the ground to black: it is subtracted at the ground's level,
        # over a box whose top edge coincides with the ground's, so pixels stay >= 0
        half = 0.5 * self.POLE_WIDTH
        g, h, t = self.GROUND_V, self.POLE_HEIGHT, self.SHADOW_THICKNESS
        # ground, pole, shadow as one stacked rect evaluation
        u0 = jnp.stack([jnp.asarray(-0.3), pole_u - half, pole_u - y])
        u1 = jnp.stack([jnp.asarray(1.3), pole_u + half, pole_u])
        v0 = jnp.asarray([g, g - h, g])
        v1 = jnp.asarray([1.3, g, g + t])
        boxes = rect(u0, u1, v0, v1, self.size, self.blur_px)
        level = jnp.asarray([self.GROUND_LEVEL, 1.0, -self.GROUND_LEVEL])
        return jnp.tensordot(level, boxes, axes=1) + sun

    def _extract(self, images):
        """θ̂ from the sun's centroid row (windowed, in the sky region left of the pole);
        L̂ from the shadow's mass: in the band around the ground line the image is
        ground + pole − level·shadow, the ground is known and the pole's mass there does
        not depend on its column, so L = (ground + pole − image mass)/(level·thickness)."""
        images = self._check_images(images)
        rows, cols = self.SUN_REGION
        half_window = self.SUN_RADIUS + 3 * self.blur_px * self._px + self._px
        _, sun_v, _ = windowed_centroid(images, region_mask(self.size, rows, cols), half_window,
                                        rows=rows, cols=cols)
        theta = jnp.clip(self.theta_from_sun_row(sun_v), math.radians(2.0), math.radians(88.0))

        rows, cols = self.SHADOW_REGION
        mask = region_mask(self.size, rows, cols)
        # the pole's mass inside the band is the same at every column it can take
        mid_pole_u = 0.5 * sum(self.nuisance_ranges[1])
        known = region_mass(self._ground() + self._pole(mid_pole_u), mask)
        length = (known - region_mass(images, mask)) / (self.GROUND_LEVEL * self.SHADOW_THICKNESS)
        return theta, length


# ---------------------------------------------------------------------------------------
class ReflectionTask(ImageTask):
    """An object (a white rectangle, twice as wide as high) above a horizontal mirror
    (a water surface at row c) and its dimmer reflection below: x = the object's
    centre row, y = the reflection's centre row = 2c − x + σ_r ε. The object's column
    and size are nuisances, copied exactly to the reflection (mirroring keeps them)."""

    sigma_r: float = 0.009
    name: ClassVar[str] = "reflection"
    x_label: ClassVar[str] = "object centre row (image heights)"
    y_label: ClassVar[str] = "reflection centre row (image heights)"
    nuisance_names: ClassVar[tuple[str, ...]] = ("u", "height")
    nuisance_ranges: ClassVar[tuple] = ((0.20, 0.80), (0.08, 0.14))
    x_range: ClassVar[tuple[float, float]] = (0.16, 0.34)
    MIRROR_V: ClassVar[float] = 0.5
    ASPECT: ClassVar[float] = 2.0
    WATER_LEVEL: ClassVar[float] = 0.15
    OBJECT_LEVEL: ClassVar[float] = 1.0
    REFLECTION_LEVEL: ClassVar[float] = 0.8

    def __post_init__(self):
        self._check_common()

    @property
    def rule(self) -> Rule:
        return Reflection(center=self.MIRROR_V)

    def _sample_x(self, key, n):
        lo, hi = self.x_range
        return jax.random.uniform(key, (n,), minval=lo, maxval=hi)

    def _water(self):
        return self.WATER_LEVEL * rect(-0.3, 1.3, self.MIRROR_V, 1.3, self.size, self.blur_px)

    def render_one(self, x, y, nuisance):
        u, height = nuisance[0], nuisance[1]
        hu, hv = 0.5 * self.ASPECT * height, 0.5 * height
        # water, object, reflection as one stacked rect evaluation
        boxes = rect(jnp.stack([jnp.asarray(-0.3), u - hu, u - hu]), jnp.stack([jnp.asarray(1.3), u + hu, u + hu]),
                     jnp.stack([jnp.asarray(self.MIRROR_V), x - hv, y - hv]),
                     jnp.stack([jnp.asarray(1.3), x + hv, y + hv]), self.size, self.blur_px)
        level = jnp.asarray([self.WATER_LEVEL, self.OBJECT_LEVEL, self.REFLECTION_LEVEL])
        return jnp.tensordot(level, boxes, axes=1)

    def _extract(self, images):
        """x̂, ŷ: windowed intensity centroids (rows) of the image minus the known water
        band, above the mirror line (the object) and below it (the reflection)."""
        images = self._check_images(images) - self._water()
        max_height = self.nuisance_ranges[1][1]
        margin = 3 * self.blur_px * self._px + self._px
        half_window = (0.5 * self.ASPECT * max_height + margin, 0.5 * max_height + margin)
        centres = []
        for rows in ((0.0, self.MIRROR_V), (self.MIRROR_V, 1.0)):
            _, cv, _ = windowed_centroid(images, region_mask(self.size, rows, (0.0, 1.0)), half_window,
                                         rows=rows, cols=(0.0, 1.0))
            centres.append(cv)
        return centres[0], centres[1]


# ---------------------------------------------------------------------------------------
class RatioTask(ImageTask):
    """Two horizontal bars (top: length x, bottom: length y = r·x + σ_r ε), each
    starting at its own random column (nuisances)."""

    sigma_r: float = 0.015
    name: ClassVar[str] = "ratio"
    x_label: ClassVar[str] = "top bar length (image widths)"
    y_label: ClassVar[str] = "bottom bar length (image widths)"
    nuisance_names: ClassVar[tuple[str, ...]] = ("start_top", "start_bottom")
    nuisance_ranges: ClassVar[tuple] = ((0.05, 0.15), (0.05, 0.40))
    x_range: ClassVar[tuple[float, float]] = (0.30, 0.80)
    RATIO: ClassVar[float] = 0.6
    TOP_ROWS: ClassVar[tuple] = (0.20, 0.30)
    BOTTOM_ROWS: ClassVar[tuple] = (0.60, 0.70)
    LEVEL: ClassVar[float] = 1.0
    TOP_REGION: ClassVar[tuple] = ((0.08, 0.42), (0.0, 1.0))
    BOTTOM_REGION: ClassVar[tuple] = ((0.48, 0.82), (0.0, 1.0))

    def __post_init__(self):
        self._check_common()

    @property
    def rule(self) -> Rule:
        return Ratio(ratio=self.RATIO)

    def _sample_x(self, key, n):
        lo, hi = self.x_range
        return jax.random.uniform(key, (n,), minval=lo, maxval=hi)

    def render_one(self, x, y, nuisance):
        a_top, a_bottom = nuisance[0], nuisance[1]
        boxes = rect(jnp.stack([a_top, a_bottom]), jnp.stack([a_top + x, a_bottom + y]),
                     jnp.asarray([self.TOP_ROWS[0], self.BOTTOM_ROWS[0]]),
                     jnp.asarray([self.TOP_ROWS[1], self.BOTTOM_ROWS[1]]), self.size, self.blur_px)
        return self.LEVEL * jnp.sum(boxes, axis=0)

    def _extract(self, images):
        """Lengths = bar masses / (level · thickness) in bands around each bar (exact)."""
        images = self._check_images(images)
        lengths = []
        for region, (r0, r1) in ((self.TOP_REGION, self.TOP_ROWS), (self.BOTTOM_REGION, self.BOTTOM_ROWS)):
            mass = region_mass(images, region_mask(self.size, *region))
            lengths.append(mass / (self.LEVEL * (r1 - r0)))
        return lengths[0], lengths[1]


# ---------------------------------------------------------------------------------------
class PerspectiveTask(ImageTask):
    """A post of real height R (in camera heights) on a flat ground plane, seen by a
    pinhole camera at height 1 looking at the horizon (row v_h). At depth Z its base
    is at row v_h + F/Z and its apparent height is F·R/Z: with x = Z − 1 (depth beyond
    the near plane), y = F·R/(x + 1) + σ_r ε, the Perspective rule. The post's column
    is a nuisance; its drawn width is constant (a stroke), so its height is its mass
    divided by the width. x is sampled with 1/Z uniform, i.e. the base row uniform."""

    sigma_r: float = 0.011
    name: ClassVar[str] = "perspective"
    x_label: ClassVar[str] = "depth beyond near plane (camera heights)"
    y_label: ClassVar[str] = "apparent height (image heights)"
    nuisance_names: ClassVar[tuple[str, ...]] = ("u",)
    nuisance_ranges: ClassVar[tuple] = ((0.15, 0.85),)
    x_range: ClassVar[tuple[float, float]] = (0.0, 2.2)
    HORIZON_V: ClassVar[float] = 0.25
    FOCAL: ClassVar[float] = 0.64
    REAL_HEIGHT: ClassVar[float] = 0.5
    GROUND_LEVEL: ClassVar[float] = 0.25
    POST_LEVEL: ClassVar[float] = 0.75
    POST_WIDTH: ClassVar[float] = 0.10
    REGION: ClassVar[tuple] = ((0.22, 1.0), (0.0, 1.0))

    def __post_init__(self):
        self._check_common()

    @property
    def rule(self) -> Rule:
        return Perspective(scale=self.FOCAL * self.REAL_HEIGHT, offset=1.0)

    def _sample_x(self, key, n):
        z_lo, z_hi = 1.0 + self.x_range[0], 1.0 + self.x_range[1]
        inv_z = jax.random.uniform(key, (n,), minval=1.0 / z_hi, maxval=1.0 / z_lo)
        return 1.0 / inv_z - 1.0

    def base_row(self, x):
        return self.HORIZON_V + self.FOCAL / (x + 1.0)

    def _ground(self):
        return self.GROUND_LEVEL * rect(-0.3, 1.3, self.HORIZON_V, 1.3, self.size, self.blur_px)

    def render_one(self, x, y, nuisance):
        u = nuisance[0]
        base = self.base_row(x)
        half = 0.5 * self.POST_WIDTH
        boxes = rect(jnp.stack([jnp.asarray(-0.3), u - half]), jnp.stack([jnp.asarray(1.3), u + half]),
                     jnp.stack([jnp.asarray(self.HORIZON_V), base - y]), jnp.stack([jnp.asarray(1.3), base]),
                     self.size, self.blur_px)
        return jnp.tensordot(jnp.asarray([self.GROUND_LEVEL, self.POST_LEVEL]), boxes, axes=1)

    def _extract(self, images):
        """From the image minus the known ground: the post's windowed centroid (cu, cv)
        and mass M; ŷ = M/(level·width), base = cv + ŷ/2, x̂ = F/(base − v_h) − 1 (base
        clipped at least one pixel below the horizon so that x̂ stays finite)."""
        images = self._check_images(images)
        rows, cols = self.REGION
        margin = 3 * self.blur_px * self._px + self._px
        half_window = (0.5 * self.POST_WIDTH + margin, 0.5 * self.FOCAL * self.REAL_HEIGHT + 3 * self.sigma_r + margin)
        _, cv, mass = windowed_centroid(images - self._ground(), region_mask(self.size, rows, cols),
                                        half_window, rows=rows, cols=cols)
        height = mass / (self.POST_LEVEL * self.POST_WIDTH)
        base = jnp.maximum(cv + 0.5 * height, self.HORIZON_V + self._px)
        return self.FOCAL / (base - self.HORIZON_V) - 1.0, height


@jax.jit
def _render_flat(task: ImageTask, x: Array, y: Array, nuisance: Array) -> Array:
    return jax.vmap(task.render_one)(x, y, nuisance)


@jax.jit
def _extract_jit(task: ImageTask, images: Array) -> tuple[Array, Array]:
    return task._extract(images)


TASKS: dict[str, type[ImageTask]] = {cls.name: cls for cls in (ShadowTask, ReflectionTask, RatioTask, PerspectiveTask)}


def get_task(name: str, **params) -> ImageTask:
    """Build a task by name ("shadow", "reflection", "ratio", "perspective")."""
    if not isinstance(name, str):
        raise TypeError(f"task name must be a string, got {type(name).__name__}")
    check_choice("name", name, TASKS)
    return TASKS[name](**params)
