"""Procedural reflectance UV maps of one synthetic subject: diffuse albedo, specular albedo, normals.

Everything is drawn in the frontal frame of the shape model (mm, see :mod:`fitdiff.synthetic.uv_layout`)
relative to the mean face's landmarks, so brows, eyes and lips land on the mesh's brows, eyes and lips.
A subject is a :class:`Appearance` (a few dozen numbers drawn from one random generator); the maps are a
deterministic function of the appearance, the layout and a noise seed.

Maps (rows top to bottom = v from 1 to 0, the UV convention of the renderer):
    diffuse  (R, R, 3) linear albedo in [0, 1]: skin tone, low-frequency mottling, cheek redness,
             under-eye shadows, lips, eyes (sclera, iris, pupil), lash line, brows, hairline, beard,
             freckles and moles.
    specular (R, R, 1) albedo in [0, 1]: oilier T-zone, dull lips, brows and hair, bright eyes.
    normals  (R, R, 3) unit tangent-space normals (x along +u, y along +v, z out of the surface) from a
             height field of pores, forehead wrinkles, crow's feet and nasolabial folds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from fitdiff.synthetic.uv_layout import UVLayout

__all__ = ["Appearance", "ReflectanceMaps", "sample_appearance", "reflectance_maps", "height_to_normals"]

# Linear diffuse albedo at the two ends of the skin-tone axis (very light to very dark skin).
_SKIN_LIGHT = np.array([0.64, 0.45, 0.37])
_SKIN_DARK = np.array([0.085, 0.047, 0.030])
# Hair colours (linear): black, dark brown, brown, auburn, blond, grey.
_HAIR = np.array(
    [
        [0.012, 0.010, 0.009],
        [0.045, 0.028, 0.018],
        [0.11, 0.065, 0.035],
        [0.19, 0.07, 0.03],
        [0.42, 0.30, 0.16],
        [0.40, 0.39, 0.38],
    ]
)
_HAIR_WEIGHTS = np.array([0.28, 0.27, 0.17, 0.08, 0.12, 0.08])
# Iris colours (linear): dark brown, brown, hazel, green, blue, grey.
_IRIS = np.array(
    [
        [0.03, 0.015, 0.008],
        [0.09, 0.045, 0.018],
        [0.16, 0.11, 0.04],
        [0.09, 0.14, 0.06],
        [0.08, 0.16, 0.30],
        [0.20, 0.22, 0.24],
    ]
)
_N_WAVES = 24  # random plane waves of the low-frequency mottling field


@dataclass(frozen=True)
class Appearance:
    """What makes one subject look like itself (all lengths in mm, colours linear RGB).

    The fields are drawn by :func:`sample_appearance`; arrays are stored as tuples so that the object is
    hashable and serialises to JSON.
    """

    skin_tone: float
    skin: tuple[float, float, float]
    mottling: float
    blush: float
    under_eye: float
    lip_tint: tuple[float, float, float]
    lip_strength: float
    hair: tuple[float, float, float]
    brow_thickness: float
    brow_lift: float
    brow_density: float
    hairline: float
    hairline_curve: float
    beard: float
    iris: tuple[float, float, float]
    iris_radius: float
    freckle_density: float
    moles: int
    oiliness: float
    tzone: float
    pores: float
    wrinkles: int
    wrinkle_depth: float
    crows_feet: int
    nasolabial: float
    noise_seed: int

    def to_dict(self) -> dict:
        """JSON-serialisable fields."""
        return asdict(self)


@dataclass
class ReflectanceMaps:
    """A subject's UV maps, float32, rows top to bottom (see the module docstring)."""

    diffuse: np.ndarray
    specular: np.ndarray
    normals: np.ndarray

    def quantised(self) -> ReflectanceMaps:
        """The maps as they are stored: albedos rounded to 8 bits, normals to unit float16 vectors.

        Renders use these so that the photos show exactly the stored ground truth.
        """
        diffuse = np.round(np.clip(self.diffuse, 0.0, 1.0) * 255.0) / 255.0
        specular = np.round(np.clip(self.specular, 0.0, 1.0) * 255.0) / 255.0
        return ReflectanceMaps(
            diffuse.astype(np.float32),
            specular.astype(np.float32),
            self.normals.astype(np.float16).astype(np.float32),
        )

    def to_uint8(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(diffuse (R, R, 3) uint8, specular (R, R, 1) uint8, normals (R, R, 3) float16)."""
        diffuse = np.round(np.clip(self.diffuse, 0.0, 1.0) * 255.0).astype(np.uint8)
        specular = np.round(np.clip(self.specular, 0.0, 1.0) * 255.0).astype(np.uint8)
        return diffuse, specular, self.normals.astype(np.float16)


def _tuple3(values: np.ndarray) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Draw one subject's appearance; a fixed number of draws whatever the values, so streams stay aligned."""
    tone = float(rng.beta(1.3, 1.3))
    skin = np.exp((1.0 - tone) * np.log(_SKIN_LIGHT) + tone * np.log(_SKIN_DARK))
    skin = skin * np.exp(rng.normal(0.0, [0.06, 0.05, 0.07]))  # undertone (red / yellow / olive)
    hair_index = int(rng.choice(len(_HAIR), p=_HAIR_WEIGHTS))
    hair = _HAIR[hair_index] * np.exp(rng.normal(0.0, 0.2) + rng.normal(0.0, 0.05, 3))
    iris_index = int(rng.choice(len(_IRIS)))
    iris = _IRIS[iris_index] * np.exp(rng.normal(0.0, 0.2) + rng.normal(0.0, 0.08, 3))
    lipstick = rng.random() < 0.15
    lip_tint = np.array([rng.uniform(0.85, 1.1), rng.uniform(0.5, 0.75), rng.uniform(0.55, 0.8)])
    if lipstick:
        lip_tint = np.array([rng.uniform(0.9, 1.6), rng.uniform(0.15, 0.45), rng.uniform(0.2, 0.6)])
    bearded = rng.random() < 0.3
    beard = float(rng.uniform(0.3, 1.0)) if bearded else 0.0
    freckled = rng.random() < 0.4
    freckle_density = float(rng.uniform(0.2, 1.0)) if freckled else 0.0
    age = float(rng.random())
    return Appearance(
        skin_tone=tone,
        skin=_tuple3(np.clip(skin, 0.01, 0.9)),
        mottling=float(rng.uniform(0.015, 0.06)),
        blush=float(rng.uniform(0.0, 0.5)),
        under_eye=float(rng.uniform(0.0, 0.35)),
        lip_tint=_tuple3(lip_tint),
        lip_strength=float(rng.uniform(0.5, 1.0)),
        hair=_tuple3(np.clip(hair, 0.005, 0.9)),
        brow_thickness=float(rng.uniform(2.0, 6.0)),
        brow_lift=float(rng.uniform(-2.5, 4.0)),
        brow_density=float(rng.uniform(0.45, 1.0)),
        hairline=float(rng.uniform(68.0, 104.0)),
        hairline_curve=float(rng.uniform(-8.0, 14.0)),
        beard=beard,
        iris=_tuple3(np.clip(iris, 0.003, 0.9)),
        iris_radius=float(rng.uniform(4.8, 6.0)),
        freckle_density=freckle_density,
        moles=int(rng.integers(0, 4)),
        oiliness=float(rng.uniform(0.1, 0.35)),
        tzone=float(rng.uniform(0.05, 0.35)),
        pores=float(rng.uniform(0.02, 0.1)),
        wrinkles=int(round(age * rng.uniform(0.0, 5.0))),
        wrinkle_depth=float(0.15 + 0.5 * age * rng.random()),
        crows_feet=int(round(age * rng.uniform(0.0, 4.0))),
        nasolabial=float(age * rng.uniform(0.2, 1.2)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


# ---------------------------------------------------------------------------------------------- helpers
def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _polyline_distance(x: np.ndarray, y: np.ndarray, points: np.ndarray, closed: bool = False) -> np.ndarray:
    """Distance (mm) from every (x, y) to a polyline through ``points`` (N, 2)."""
    pts = np.concatenate([points, points[:1]]) if closed else points
    best = np.full(x.shape, np.inf)
    for a, b in zip(pts[:-1], pts[1:]):
        d = b - a
        length2 = max(float(d @ d), 1e-12)
        t = np.clip(((x - a[0]) * d[0] + (y - a[1]) * d[1]) / length2, 0.0, 1.0)
        best = np.minimum(best, np.hypot(x - (a[0] + t * d[0]), y - (a[1] + t * d[1])))
    return best


def _inside_polygon(x: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test for every (x, y); ``polygon`` is (N, 2)."""
    inside = np.zeros(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < x_cross)
    return inside


def _soft_region(x: np.ndarray, y: np.ndarray, polygon: np.ndarray, feather: float) -> np.ndarray:
    """Polygon mask in [0, 1] with a ``feather`` mm wide soft edge (0.5 on the outline)."""
    dist = _polyline_distance(x, y, polygon, closed=True)
    signed = np.where(_inside_polygon(x, y, polygon), dist, -dist)
    return _smoothstep(-feather, feather, signed)


def _wave_noise(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, scales: tuple[float, float]
) -> np.ndarray:
    """Smooth zero-mean noise of unit-ish amplitude: random plane waves, wavelengths in ``scales`` mm."""
    out = np.zeros_like(x)
    for _ in range(_N_WAVES):
        wavelength = np.exp(rng.uniform(np.log(scales[0]), np.log(scales[1])))
        angle = rng.uniform(0.0, 2 * np.pi)
        phase = rng.uniform(0.0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        out += np.cos(k * (np.cos(angle) * x + np.sin(angle) * y) + phase)
    return out / np.sqrt(_N_WAVES / 2)


def _texel_noise(shape: tuple[int, int], rng: np.random.Generator, blur: float) -> np.ndarray:
    """White noise per texel, blurred by a Gaussian of ``blur`` texels, rescaled to unit std."""
    noise = rng.standard_normal(shape)
    if blur > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), blur, borderType=cv2.BORDER_REFLECT)
    return noise / max(float(noise.std()), 1e-12)


def _spots(
    x: np.ndarray,
    y: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    strengths: np.ndarray,
    min_sigma: float,
) -> np.ndarray:
    """Sum of Gaussian spots; spots narrower than ``min_sigma`` are widened with their area kept."""
    out = np.zeros_like(x)
    for (cx, cy), r, s in zip(centres, radii, strengths):
        sigma = max(r, min_sigma)
        out += s * (r / sigma) ** 2 * _gauss(x, y, cx, cy, sigma, sigma)
    return out


def _blend(base: np.ndarray, color: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Linear blend of (R, R, 3) ``base`` toward ``color`` ((3,) or (R, R, 3)) by (R, R) ``weight``."""
    w = np.clip(weight, 0.0, 1.0)[..., None]
    return base * (1.0 - w) + color * w


def height_to_normals(height: np.ndarray, mm_per_texel: float) -> np.ndarray:
    """Unit tangent-space normals (R, R, 3) of an (R, R) height field in mm (rows top to bottom = +v down).

    Slopes use central differences (one-sided at the border); x follows +u (columns), y follows +v
    (upwards in the image), z points out of the surface: n = normalise(-dh/du, -dh/dv, 1).
    """
    dh_col = np.gradient(height, axis=1) / mm_per_texel
    dh_row = np.gradient(height, axis=0) / mm_per_texel
    normals = np.stack([-dh_col, dh_row, np.ones_like(height)], axis=-1)  # +v is -row
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------- the maps
def reflectance_maps(appearance: Appearance, layout: UVLayout) -> ReflectanceMaps:
    """The diffuse, specular and normal maps of ``appearance`` on ``layout`` (deterministic)."""
    a = appearance
    rng = np.random.default_rng(a.noise_seed)
    x, y = layout.x, layout.y
    lm = layout.landmarks[:, :2]
    res = layout.resolution
    min_sigma = 0.6 * layout.mm_per_texel
    eye_r, eye_l = lm[36:42].mean(0), lm[42:48].mean(0)

    # --- masks ----------------------------------------------------------------------------------
    lips = _soft_region(x, y, lm[48:60], feather=1.2)
    mouth_gap = _soft_region(x, y, lm[60:68], feather=0.6)
    eyes = np.maximum(_soft_region(x, y, lm[36:42], 0.7), _soft_region(x, y, lm[42:48], 0.7))
    iris_r = np.hypot(x - eye_r[0], y - eye_r[1])
    iris_l = np.hypot(x - eye_l[0], y - eye_l[1])
    iris_d = np.minimum(iris_r, iris_l)
    iris = eyes * (1.0 - _smoothstep(a.iris_radius - 0.5, a.iris_radius + 0.5, iris_d))
    pupil = eyes * (1.0 - _smoothstep(1.6, 2.4, iris_d))
    lash = np.minimum(_polyline_distance(x, y, lm[36:40]), _polyline_distance(x, y, lm[42:46]))
    lash_line = np.exp(-0.5 * (lash / max(0.8, min_sigma)) ** 2) * (1.0 - eyes)
    brow_pts = [lm[17:22] + [0.0, a.brow_lift], lm[22:27] + [0.0, a.brow_lift]]
    brow_d = np.minimum(*(_polyline_distance(x, y, p) for p in brow_pts))
    # Brows taper toward the temples: thinner beyond the outer landmarks.
    taper = 1.0 - 0.4 * _smoothstep(40.0, 58.0, np.abs(x))
    brows = 1.0 - _smoothstep(0.6 * a.brow_thickness * taper, a.brow_thickness * taper + 0.8, brow_d)
    strands = 0.5 + 0.5 * np.tanh(1.5 * _texel_noise(x.shape, rng, 0.5))
    brows = brows * a.brow_density * (0.55 + 0.45 * strands)
    hair = _smoothstep(a.hairline - 3.0, a.hairline + 3.0, y + a.hairline_curve * (x / 50.0) ** 2)
    hair = np.maximum(hair, _smoothstep(64.0, 72.0, np.abs(x)) * _smoothstep(15.0, 30.0, y))  # temples
    chin_and_lip = _smoothstep(-22.0, -30.0, y) * (1.0 - _smoothstep(50.0, 64.0, np.abs(x))) + _gauss(
        x, y, 0.0, -23.5, 16.0, 3.0
    )
    jaw = _smoothstep(-5.0, -25.0, y) * _smoothstep(40.0, 55.0, np.abs(x))
    beard_zone = np.clip(chin_and_lip + jaw, 0.0, 1.0) * (1.0 - lips)
    stubble = 0.5 + 0.5 * np.tanh(_texel_noise(x.shape, rng, 0.6))
    beard = a.beard * beard_zone * (0.5 + 0.5 * stubble)

    # --- diffuse albedo -----------------------------------------------------------------------------
    skin = np.asarray(a.skin)
    mott = _wave_noise(x, y, rng, (12.0, 60.0))
    diffuse = skin * (1.0 + a.mottling * mott)[..., None]
    diffuse = diffuse * (1.0 + 0.02 * _texel_noise(x.shape, rng, 0.8))[..., None]
    cheeks = _gauss(np.abs(x), y, 44.0, 6.0, 14.0, 11.0) + 0.5 * _gauss(x, y, 0.0, -6.0, 8.0, 6.0)
    diffuse = diffuse * (1.0 + a.blush * cheeks[..., None] * np.array([0.25, -0.12, -0.1]))
    under = _gauss(np.abs(x), y, 32.0, 22.5, 11.0, 3.5)
    diffuse = diffuse * (1.0 - a.under_eye * under[..., None] * np.array([0.25, 0.32, 0.22]))
    lip_color = skin * np.asarray(a.lip_tint)
    diffuse = _blend(diffuse, lip_color, a.lip_strength * lips)
    diffuse = _blend(diffuse, skin * np.array([0.35, 0.2, 0.2]), mouth_gap)
    # Freckles on the cheeks and the nose, moles anywhere on the face.
    n_freckles = int(a.freckle_density * 140)
    side = rng.choice([-1.0, 1.0], size=n_freckles)
    centres = np.stack(
        [side * np.abs(rng.normal(28.0, 14.0, n_freckles)), rng.normal(12.0, 11.0, n_freckles)], 1
    )
    freckles = _spots(
        x, y, centres, rng.uniform(0.6, 1.6, n_freckles), rng.uniform(0.2, 0.5, n_freckles), min_sigma
    )
    diffuse = diffuse * (1.0 - np.clip(freckles, 0.0, 0.8)[..., None] * np.array([0.45, 0.55, 0.6]))
    mole_centres = np.stack([rng.uniform(-55, 55, a.moles), rng.uniform(-60, 60, a.moles)], 1)
    moles = _spots(x, y, mole_centres, rng.uniform(1.2, 2.5, a.moles), np.full(a.moles, 0.85), min_sigma)
    diffuse = diffuse * (1.0 - np.clip(moles, 0.0, 0.9)[..., None] * np.array([0.7, 0.75, 0.78]))
    # Eyes: sclera, iris, pupil, lashes.
    sclera = np.array([0.62, 0.58, 0.55]) * (1.0 + 0.04 * _texel_noise(x.shape, rng, 0.5))[..., None]
    diffuse = _blend(diffuse, sclera, eyes)
    iris_texture = np.asarray(a.iris) * (1.0 + 0.25 * _texel_noise(x.shape, rng, 0.4))[..., None]
    diffuse = _blend(diffuse, iris_texture, iris)
    diffuse = _blend(diffuse, np.array([0.01, 0.01, 0.01]), pupil)
    hair_color = np.asarray(a.hair)
    diffuse = _blend(diffuse, hair_color * 0.7, 0.8 * lash_line)
    diffuse = _blend(diffuse, hair_color, brows)
    diffuse = _blend(diffuse, hair_color, 0.85 * beard)
    hair_strands = hair_color * (1.0 + 0.25 * _texel_noise(x.shape, rng, 0.7))[..., None]
    diffuse = _blend(diffuse, hair_strands, hair)

    # --- specular albedo ------------------------------------------------------------------------------
    tzone = (
        _gauss(x, y, 0.0, 62.0, 32.0, 18.0)
        + np.exp(-0.5 * (x / 9.0) ** 2) * _smoothstep(-18.0, -5.0, y) * (1.0 - _smoothstep(40.0, 55.0, y))
        + 0.6 * _gauss(x, y, 0.0, -64.0, 14.0, 9.0)
    )
    specular = a.oiliness * (1.0 + 0.15 * mott) + a.tzone * np.clip(tzone, 0.0, 1.0)
    specular = specular * (1.0 - 0.5 * lips) * (1.0 - 0.7 * np.clip(brows + beard + hair, 0.0, 1.0))
    specular = specular + 0.03 * _texel_noise(x.shape, rng, 0.5)
    specular = specular * (1.0 - eyes) + 0.8 * eyes

    # --- height field -> tangent-space normals --------------------------------------------------------
    mm = layout.mm_per_texel
    pore_zone = (
        0.6 + 0.8 * _gauss(np.abs(x), y, 30.0, 5.0, 20.0, 15.0) + 0.8 * _gauss(x, y, 0.0, 0.0, 10.0, 15.0)
    )
    height = a.pores * mm * pore_zone * _texel_noise(x.shape, rng, 0.6)
    width = max(0.9, min_sigma)
    for _ in range(a.wrinkles):
        y0, bend = rng.uniform(58.0, 84.0), rng.uniform(-4.0, 4.0)
        span = rng.uniform(25.0, 45.0)
        line = y0 + bend * (x / 40.0) ** 2
        height -= (
            a.wrinkle_depth
            * np.exp(-0.5 * ((y - line) / width) ** 2)
            * (1 - _smoothstep(span - 8, span, np.abs(x)))
        )
    for corner in (lm[36], lm[45]):
        outward = np.sign(corner[0])
        for _ in range(a.crows_feet):
            angle = rng.uniform(-0.6, 0.6)
            direction = np.array([outward * np.cos(angle), np.sin(angle)])
            start = corner + direction * 3.0
            segment = np.stack([start, start + direction * rng.uniform(8.0, 15.0)])
            height -= 0.6 * a.wrinkle_depth * np.exp(-0.5 * (_polyline_distance(x, y, segment) / width) ** 2)
    for ala, mouth in ((lm[31], lm[48]), (lm[35], lm[54])):
        outward = np.sign(ala[0])
        fold = np.stack(
            [
                ala + [outward * 3.0, 2.0],
                (ala + mouth) / 2 + [outward * 7.0, 0.0],
                mouth + [outward * 5.0, -4.0],
            ]
        )
        height -= a.nasolabial * np.exp(-0.5 * (_polyline_distance(x, y, fold) / (1.5 * width)) ** 2)
    height += 0.15 * mm * brows * _texel_noise(x.shape, rng, 0.4)  # brow hair
    normals = height_to_normals(height, mm)

    assert diffuse.shape == (res, res, 3)
    return ReflectanceMaps(
        diffuse=np.clip(diffuse, 0.0, 1.0).astype(np.float32),
        specular=np.clip(specular, 0.0, 1.0)[..., None].astype(np.float32),
        normals=normals.astype(np.float32),
    )
