"""Synthetic FER2013-like faces: the embedded default dataset, for users with no real data.

Each face is a 48x48 grayscale drawing built from anti-aliased signed-distance shapes: an egg-shaped
head, neck, hair (bald, short, fringe or long), ears, brows, almond eyes with sclera and iris,
nostrils, lips and a mouth that can be a line, a D-shaped open smile, an O or a teeth-baring slit,
plus the creases that carry expression (nose wrinkles, nasolabial folds, frown lines between the
brows, forehead lines). The seven FER2013 expressions are prototypes over those features (the
Facial Action Coding System's usual ones: inner brows up for sad/fear, brows down and in for
angry, raised brows + wide eyes + O mouth for surprise, nose wrinkle + raised upper lip for
disgust, smile + squint for happy).

Why it is hard on purpose: a dataset a small CNN solves perfectly teaches nothing about
ensembles. So intensity is random (weak expressions drift towards neutral), each feature's share
of the expression is jittered or dropped, resting faces vary (some look sad or cross at rest),
and pose, scale, rotation, aspect, yaw, lighting, gamma, contrast, blur and noise all vary.
The classes therefore overlap the way real ones do (angry/disgust/sad/fear), and labels stay
honest: every face is drawn from its class's prototype.

Rendering is batched: every shape is evaluated on a (B, 48, 48) grid of face coordinates obtained
by inverse-transforming the pixel centres with each face's affine, so pose is exact and edges are
anti-aliased by a one-pixel linear ramp on the distance. No per-pixel Python loops.
"""

from __future__ import annotations

import numpy as np

SIZE = 48
SPLIT_SIZES = {"train": 4000, "public_test": 600, "private_test": 600}
_FER_COUNTS = np.array([4953, 547, 5121, 8989, 6077, 4002, 6198], dtype=np.float64)
CLASS_FRACTIONS = _FER_COUNTS / _FER_COUNTS.sum()
_SPLIT_ORDER = ("train", "public_test", "private_test")
_CHUNK = 128  # faces rendered per batch: big enough to amortise numpy overhead, small for cache

# Expression deltas from a neutral face, in face units (the head is ~1.5 wide, ~2 tall, y down)
# or fractions: lift = brows up, inner = inner brow ends up (negative: down), squeeze = brows
# drawn together, eye = eye opening change, cheek = cheeks raised (squint from below), curve =
# mouth corners up, open = jaw drop, width = mouth width change, round = O shape, teeth shown,
# ulip = upper lip raised, asym = one corner shifted, wrinkle = nose wrinkle, naso = nasolabial
# folds, glabella = frown lines, forehead = forehead lines, press = lips pressed, gaze = look down.
_P = ("lift", "inner", "squeeze", "eye", "cheek", "curve", "open", "width", "round", "teeth",
      "ulip", "asym", "wrinkle", "naso", "glabella", "forehead", "press", "gaze")
_I = {k: i for i, k in enumerate(_P)}


def _proto(**kw: float) -> np.ndarray:
    v = np.zeros(len(_P))
    for k, x in kw.items():
        v[_I[k]] = x
    return v


# (class, variant probability, deltas). Several variants per class: real expressions do not share
# one mouth (closed vs open smile, pressed lips vs bared teeth).
_VARIANTS = [
    (0, 0.6, _proto(lift=-0.06, inner=-0.10, squeeze=0.035, eye=-0.15, cheek=0.2, curve=-0.03,
                    width=-0.18, glabella=1.0, wrinkle=0.3, naso=0.2, press=1.0)),
    (0, 0.4, _proto(lift=-0.06, inner=-0.10, squeeze=0.035, eye=-0.05, cheek=0.3, curve=-0.02,
                    open=0.11, width=0.08, teeth=1.0, ulip=0.3, wrinkle=0.5, naso=0.5,
                    glabella=1.0)),
    (1, 1.0, _proto(lift=-0.03, inner=-0.05, squeeze=0.02, eye=-0.4, cheek=0.7, curve=-0.05,
                    open=0.07, teeth=0.7, ulip=1.0, asym=0.07, wrinkle=1.0, naso=1.0,
                    glabella=0.4)),
    (2, 0.65, _proto(lift=0.07, inner=0.08, squeeze=0.02, eye=0.55, curve=-0.03, open=0.10,
                     width=0.25, round=0.2, teeth=0.5, ulip=0.2, forehead=0.6, glabella=0.3)),
    (2, 0.35, _proto(lift=0.07, inner=0.08, squeeze=0.02, eye=0.5, curve=-0.04, open=0.02,
                     width=0.22, forehead=0.6, glabella=0.3, press=0.4)),
    (3, 0.5, _proto(lift=0.02, eye=-0.4, cheek=1.0, curve=0.14, width=0.25, naso=0.8)),
    (3, 0.5, _proto(lift=0.02, eye=-0.4, cheek=1.0, curve=0.13, open=0.14, width=0.3,
                    teeth=1.0, naso=0.9)),
    (4, 1.0, _proto(inner=0.09, squeeze=0.01, eye=-0.25, curve=-0.09, width=-0.1, forehead=0.3,
                    glabella=0.3, press=0.3, gaze=0.025)),
    (5, 0.7, _proto(lift=0.13, inner=0.02, eye=0.6, open=0.26, width=-0.45, round=1.0,
                    forehead=1.0)),
    (5, 0.3, _proto(lift=0.12, inner=0.02, eye=0.6, open=0.13, width=-0.3, round=0.8,
                    forehead=0.8)),
    (6, 1.0, _proto()),
]
_VAR_CLASS = np.array([c for c, _, _ in _VARIANTS])
_VAR_PROB = np.array([p for _, p, _ in _VARIANTS])
_VAR_DELTA = np.stack([d for _, _, d in _VARIANTS])

# Pixel-centre grid in image units [-1, 1], shaped to broadcast against (B, 1, 1) parameters.
_g = (np.arange(SIZE, dtype=np.float32) + 0.5) / SIZE * 2 - 1
_GX = _g[None, None, :]
_GY = _g[None, :, None]
# Bilinear upsampling matrix 6 -> 48, for smooth random background/skin fields.
_LOWRES = 6
_UP = np.clip(1 - np.abs(np.linspace(0, _LOWRES - 1, SIZE)[:, None] - np.arange(_LOWRES)[None]),
              0, 1).astype(np.float32)


def stratified_counts(n: int, fractions: np.ndarray = CLASS_FRACTIONS) -> np.ndarray:
    """Per-class counts, int64 (7,) summing to ``n``: n * fractions, largest-remainder rounded."""
    raw = n * np.asarray(fractions, dtype=np.float64)
    counts = np.floor(raw).astype(np.int64)
    short = n - int(counts.sum())
    # Stable sort so ties resolve by class index: the counts never depend on float noise order.
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def make_synthetic(seed: int = 0, sizes: dict[str, int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the synthetic dataset.

    Returns ``images`` uint8 (N, 48, 48) in 0..255, ``labels`` int64 (N,) in 0..6 and ``splits``
    unicode (N,) of 'train'/'public_test'/'private_test', rows grouped in that order. Each split's
    labels have exactly :func:`stratified_counts` per class, shuffled. Same seed -> identical
    arrays. ``sizes`` defaults to :data:`SPLIT_SIZES`; missing splits get 0 rows.
    """
    sizes = dict(SPLIT_SIZES if sizes is None else sizes)
    unknown = set(sizes) - set(_SPLIT_ORDER)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {_SPLIT_ORDER}")
    rng = np.random.default_rng(seed)
    labels, splits = [], []
    for name in _SPLIT_ORDER:
        n = int(sizes.get(name, 0))
        if n < 0:
            raise ValueError(f"split size must be >= 0, got {name}={n}")
        lab = np.repeat(np.arange(7, dtype=np.int64), stratified_counts(n))
        rng.shuffle(lab)
        labels.append(lab)
        splits.append(np.full(n, name))
    labels = np.concatenate(labels)
    splits = np.concatenate(splits).astype("<U12")
    images = np.empty((len(labels), SIZE, SIZE), dtype=np.uint8)
    for start in range(0, len(labels), _CHUNK):
        lab = labels[start:start + _CHUNK]
        face = _render(lab, rng, None)
        images[start:start + len(lab)] = np.rint(face * 255).astype(np.uint8)
    return images, labels, splits


def render_face(expression: int, rng: np.random.Generator, intensity: float | None = None
                ) -> np.ndarray:
    """One face of class ``expression`` (0..6): float32 (48, 48) in 0..1.

    ``intensity`` in 0..1 scales the expression away from neutral (None: random 0.3..1, and
    some features randomly weakened). The number of draws from ``rng`` does not depend on
    ``expression``: two generators in the same state give the same person, pose and lighting,
    so ``render_face(c, np.random.default_rng(k))`` for c in 0..6 shows one face's 7 expressions.
    """
    if not 0 <= int(expression) <= 6:
        raise ValueError(f"expression must be in 0..6, got {expression}")
    t = None if intensity is None else np.array([float(intensity)])
    return _render(np.array([int(expression)]), rng, t)[0]


# --- drawing ---------------------------------------------------------------------------------

def _col(x: np.ndarray) -> np.ndarray:
    """(B,) -> (B, 1, 1) float32, to broadcast per-face parameters over the pixel grid."""
    return np.asarray(x, dtype=np.float32)[:, None, None]


def _expression(labels: np.ndarray, rng: np.random.Generator, t: np.ndarray | None) -> np.ndarray:
    """(B, len(_P)) expression deltas: prototype variant x intensity x per-feature jitter."""
    b = len(labels)
    u = rng.random(b)
    var = np.empty(b, dtype=np.int64)
    for c in range(7):
        idx = np.flatnonzero(_VAR_CLASS == c)
        cum = np.cumsum(_VAR_PROB[idx])
        m = labels == c
        var[m] = idx[np.minimum(np.searchsorted(cum, u[m] * cum[-1]), len(idx) - 1)]
    if t is None:
        t = rng.uniform(0.3, 1.0, b)
        drop = rng.random((b, len(_P))) < 0.15  # a feature that barely shows: classes overlap
    else:
        drop = np.zeros((b, len(_P)), dtype=bool)
    gain = rng.uniform(0.6, 1.3, (b, len(_P))) * np.where(drop, 0.25, 1.0)
    d = _VAR_DELTA[var] * gain * np.asarray(t, dtype=np.float64)[:, None]
    # Asymmetry (disgust's one-sided lip raise) goes left or right.
    d[:, _I["asym"]] *= rng.choice([-1.0, 1.0], b)
    return d


def _blur(img: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Separable 5-tap Gaussian blur with a per-image sigma (B,) in pixels, edge-replicated."""
    k = np.exp(-0.5 * (np.arange(-2, 3)[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(1, keepdims=True)).astype(np.float32)
    n = img.shape[1]
    p = np.pad(img, ((0, 0), (2, 2), (0, 0)), mode="edge")
    out = sum(k[:, i, None, None] * p[:, i:i + n] for i in range(5))
    p = np.pad(out, ((0, 0), (0, 0), (2, 2)), mode="edge")
    return sum(k[:, i, None, None] * p[:, :, i:i + n] for i in range(5))


def _render(labels: np.ndarray, rng: np.random.Generator, intensity: np.ndarray | None
            ) -> np.ndarray:
    """Faces for ``labels`` (B,): float32 (B, 48, 48) in 0..1."""
    b = len(labels)
    e = _expression(labels, rng, intensity)
    E = {k: _col(e[:, i]) for k, i in _I.items()}
    # Every draw below has the same size whatever the labels, so one rng state gives the same
    # person, pose and lighting for any expression (render_face relies on this).
    U = lambda lo, hi: _col(rng.uniform(lo, hi, b))
    N = lambda s: _col(rng.normal(0, s, b))

    # Pose: image point = t + s * R * diag(ax, ay) * face point; invert it on the pixel grid.
    s = U(0.88, 1.12)
    ang = N(0.12)
    asp = U(0.9, 1.1)
    tx, ty = N(0.06), N(0.05) + 0.02
    ca, sa = np.cos(ang), np.sin(ang)
    dx, dy = _GX - tx, _GY - ty
    x = (ca * dx + sa * dy) / (s * asp)
    y = (-sa * dx + ca * dy) / (s / asp)
    inv_aa = s * SIZE / 2  # 1 / (pixel size in face units): one-pixel edge ramps

    def A(d):  # coverage of the shape {d < 0}
        return np.clip(0.5 - d * inv_aa, 0.0, 1.0)

    # Yaw: inner features slide towards one side and that side compresses.
    yaw = U(-0.6, 0.6)
    xf = (x - 0.1 * yaw) * (1 + 0.25 * yaw * x)
    ax = np.abs(xf)
    side = np.sign(xf)

    # Background: base level plus a smooth random field (rooms, walls, other people).
    bg_field = _UP @ rng.uniform(-1, 1, (b, _LOWRES, _LOWRES)).astype(np.float32) @ _UP.T
    img = U(0.05, 0.95) + U(0.0, 0.25) * bg_field
    skin = U(0.35, 0.85)
    hair_col = np.minimum(U(0.02, 0.7) * U(0.3, 1.0), skin * 0.8)
    hair_style = rng.random(b)  # <.12 bald, <.55 short, <.8 fringe, else long

    # Head geometry (egg: narrower jaw), with per-identity jitter.
    rx = U(0.70, 0.80)
    cy = 0.05
    taper = U(0.12, 0.28)
    yy = y - cy
    rxe = rx * (1 - taper * np.maximum(yy, 0))
    r2 = (x / rxe) ** 2 + yy * yy
    d_face = (np.sqrt(r2) - 1) * rx

    # Long hair sits behind the head; neck and ears too.
    long_hair = _col(hair_style >= 0.8)
    hl_len = U(0.3, 1.2)
    d_long = np.maximum((np.sqrt((x / (rx * U(1.2, 1.4))) ** 2 + ((y - 0.1) / 1.3) ** 2) - 1) * rx,
                        y - hl_len)
    img = img + (hair_col - img) * (A(d_long) * long_hair)
    d_neck = np.maximum(np.abs(x) - rx * 0.5, 0.55 - y)
    img = img + (skin * 0.7 - img) * A(d_neck)
    d_ear = np.sqrt(((np.abs(x) - rx * 0.98) / 0.09) ** 2 + ((y + 0.02) / 0.17) ** 2) * 0.09 - 0.09
    img = img + (skin * 0.85 - img) * A(d_ear)

    # Skin with rounded shading (darker towards the rim) and a faint blotchy field.
    sk_field = _UP @ rng.uniform(-1, 1, (b, _LOWRES, _LOWRES)).astype(np.float32) @ _UP.T
    face_col = skin * (1 - U(0.15, 0.35) * r2 + 0.04 * sk_field)
    face_a = A(d_face)
    img = img + (face_col - img) * face_a

    def darken(alpha, amount):
        nonlocal img
        img = img * (1 - alpha * amount)

    # Forehead lines (surprise, fear, sad): horizontal arcs, central when only inner brows rise.
    fh = E["forehead"]
    by0 = -0.33 + N(0.025)
    fl_w = 0.18 + 0.2 * np.clip(E["lift"] / 0.1, 0, 1)
    for k in range(2):
        yk = by0 - 0.16 - 0.08 * k - E["lift"]
        d = np.maximum(np.abs(y - yk + 0.15 * x * x) - 0.012, np.abs(xf) - fl_w)
        darken(A(d), 0.25 * np.clip(fh, 0, 1))

    # Brows: thick capsule from inner to outer end, arched; inner end moves with expression.
    lift = E["lift"]
    inner = E["inner"] + N(0.02)  # resting tilt: some faces look sad or cross at rest
    xi = 0.09 - E["squeeze"] + N(0.01)
    yi = by0 - lift - inner
    xo = U(0.42, 0.5)
    yo = by0 - lift + 0.25 * inner + N(0.015)
    arch = U(0.02, 0.07) * (1 - np.clip(-E["inner"] / 0.1, 0, 1) * 0.6)
    bx, byv = xo - xi, yo - yi
    tt = np.clip(((ax - xi) * bx + (y - yi) * byv) / (bx * bx + byv * byv), 0, 1)
    px = ax - xi - tt * bx
    py = y - yi - tt * byv + arch * 4 * tt * (1 - tt)
    bth = U(0.028, 0.045) * (1.15 - 0.45 * tt)
    d_brow = np.sqrt(px * px + py * py) - bth
    brow_dark = U(0.45, 0.85)
    darken(A(d_brow), brow_dark)

    # Frown lines between the brows (angry, disgust).
    d = np.maximum(np.abs(ax - 0.035) - 0.011, np.abs(y - (by0 - lift + 0.07)) - 0.055)
    darken(A(d), 0.35 * np.clip(E["glabella"], 0, 1))

    # Eyes: almond between two lid curves; sockets shaded; wide eyes show sclera around the iris.
    ex = U(0.27, 0.33)
    ey = -0.12 + N(0.015)
    ew = U(0.11, 0.14)
    eye_s = U(0.8, 1.15) * np.maximum(1 + E["eye"], 0.25)
    cheek = np.clip(E["cheek"], 0, 1)
    hu = 0.065 * eye_s
    hl = 0.045 * np.minimum(eye_s, 1.3) * (1 - 0.5 * cheek)
    lx = ax - ex
    ly = y - ey
    env = np.clip(1 - (lx / ew) ** 2, 0, 1)
    sock = np.exp(-(lx * lx / 0.02 + (ly + 0.04) ** 2 / 0.008))
    darken(sock, U(0.05, 0.25))
    # Happy/disgust cheeks push up: a lit bulge with a crease under the lower lid.
    d_crease = np.maximum(np.abs(ly - hl - 0.045) - 0.012, np.abs(lx) - ew * 0.8)
    darken(A(d_crease), 0.3 * cheek)
    d_eye = np.maximum(np.maximum(-hu * env - ly, ly - hl * env), np.abs(lx) - ew)
    eye_a = A(d_eye)
    sclera = np.minimum(skin * U(1.0, 1.25), 0.95)
    img = img + (sclera - img) * eye_a
    gx = N(0.02)
    gy = E["gaze"] + N(0.01)
    ri = 0.055 * U(0.9, 1.1)
    d_iris = np.sqrt((lx - gx * side) ** 2 + (ly - gy) ** 2) - ri
    img = img * (1 - A(d_iris) * eye_a * U(0.75, 0.9))
    d_lid = np.maximum(np.abs(ly + hu * env) - 0.018, np.abs(lx) - ew * 1.05)
    darken(A(d_lid), 0.6)

    # Nose: nostrils, shadow under the tip, side shadow away from the light, disgust wrinkles.
    ny = 0.24 + N(0.015)
    flare = 1 + 0.3 * np.clip(E["wrinkle"], 0, 1)
    d_nos = np.sqrt(((ax - 0.075 * flare) / 0.035) ** 2 + ((y - ny) / 0.02) ** 2) * 0.02 - 0.02
    darken(A(d_nos), U(0.35, 0.6))
    darken(np.exp(-((xf / 0.12) ** 2 + ((y - ny - 0.05) / 0.04) ** 2)), U(0.05, 0.2))
    light = _col(rng.uniform(0, 2 * np.pi, b))
    lcx = np.cos(light)
    d_nside = np.maximum(np.abs(xf + np.sign(lcx) * 0.085) - 0.02, np.abs(y - 0.08) - 0.13)
    darken(A(d_nside), 0.12 * np.abs(lcx))
    wr = np.clip(E["wrinkle"], 0, 1)
    for k in range(3):
        d = np.maximum(np.abs(y - (-0.02 + 0.05 * k) - 0.4 * ax * ax) - 0.012, ax - 0.11)
        darken(A(d), 0.4 * wr)

    # Mouth: lip line f(x); an open mouth spans f - op*ku*env .. f + op*(1-ku)*env.
    naso = np.clip(E["naso"] + U(0.0, 0.2), 0, 1.3)
    ym = U(0.42, 0.5)
    w = U(0.19, 0.25) * np.maximum(1 + E["width"], 0.35)
    c = E["curve"] + N(0.025)
    asym = E["asym"]
    op = np.maximum(E["open"], 0) + U(0.0, 0.012)
    xn = xf / w
    xn2 = xn * xn
    ulip = np.clip(E["ulip"], 0, 1)
    f = ym - c * xn2 + asym * xn - 0.05 * ulip * np.maximum(xn * np.sign(asym), 0)
    ku = np.clip(0.45 - 1.5 * np.maximum(c, 0) + 0.3 * E["ulip"], 0.15, 0.85)
    e1 = np.clip(1 - xn2, 0, 1)
    r = np.clip(0.45 + 0.55 * E["round"] + 0.4 * E["teeth"], 0, 1)
    menv = e1 + r * (np.sqrt(e1) - e1)
    snarl = 1 + 0.9 * ulip * np.clip(xn * np.sign(asym), -1, 1)  # disgust lifts one side
    fu = f - op * ku * menv * snarl
    fl = f + op * (1 - ku) * menv
    xend = np.abs(xf) - w
    # Nasolabial folds run from the nose wings to just outside the mouth corners.
    xfold = 0.13 + (y - 0.2) * (w + 0.05 - 0.13) / (ym - 0.2)
    d_naso = np.maximum(np.abs(ax - xfold) - 0.014,
                        np.abs(y - (0.2 + ym) / 2 + 0.02) - (ym - 0.2) / 2)
    darken(A(d_naso), 0.22 * naso)
    # Lips: a darker band around the mouth, thinner when pressed.
    press = np.clip(E["press"], 0, 1)
    lip_u = U(0.02, 0.045) * (1 - 0.6 * press)
    lip_l = U(0.035, 0.065) * (1 - 0.6 * press)
    d_lips = np.maximum(np.maximum(fu - lip_u * e1 - y, y - fl - lip_l * e1), xend)
    darken(A(d_lips), U(0.08, 0.25))
    # Mouth interior (dark), closed-mouth line, then teeth below the upper lip.
    d_in = np.maximum(np.maximum(fu - y, y - fl), xend)
    d_line = np.maximum(np.abs(y - f) - 0.018 * (1 + 0.5 * press), xend + 0.01)
    line_a = A(d_line)
    in_a = A(d_in)
    darken(np.maximum(line_a * (0.55 + 0.2 * press), in_a * 0.85), 1.0)
    teeth = np.clip(E["teeth"], 0, 1) * (op > 0.04)
    th_u = op * menv * U(0.35, 0.6)
    teeth_a = in_a * A(y - fu - th_u)
    tcol = np.minimum(skin * 1.2, 0.95)
    img = img + (tcol - img) * (teeth_a * teeth)
    # Shadow under the lower lip (the chin's upper edge).
    d_chin = np.maximum(np.abs(y - fl - lip_l - 0.05) - 0.02, np.abs(xf) - w * 0.6)
    darken(A(d_chin), U(0.0, 0.15))

    # Hair over the forehead (short or fringe), drawn last so it can cover brows.
    has_top = _col(hair_style >= 0.12)
    fringe = _col((hair_style >= 0.55) & (hair_style < 0.8))
    hline = (-0.62 + U(-0.08, 0.08) + fringe * U(0.15, 0.3) + U(0.1, 0.3) * x * x
             + U(-0.1, 0.1) * x + U(1.5, 3.0) * np.maximum(np.abs(x) - rx * U(0.6, 0.8), 0))
    d_hair = np.maximum((np.sqrt((x / (rx * 1.1)) ** 2 + ((y + 0.08) / 1.05) ** 2) - 1) * rx,
                        y - hline)
    hair_tex = hair_col * (1 - 0.3 * sk_field + 0.05 * np.sin(x * U(25, 45) + y * U(-8, 8)))
    img = img + (hair_tex - img) * (A(d_hair) * has_top)

    # Lighting: directional gradient across the face, then gamma/contrast, blur and noise.
    g = U(0.0, 0.35)
    img = img * (1 + g * (x * lcx + y * np.sin(light)) * 0.8)
    img = np.clip(img, 1e-4, 1.0) ** U(0.75, 1.35)
    lo = img.min(axis=(1, 2), keepdims=True)
    hi = img.max(axis=(1, 2), keepdims=True)
    stretch = U(0.0, 0.7)  # partial auto-contrast: real crops range from flat to punchy
    img = img + stretch * ((img - lo) / np.maximum(hi - lo, 1e-3) - img)
    img = _blur(img, rng.uniform(0.35, 1.0, b))
    img = img + rng.normal(0, 1, img.shape).astype(np.float32) * U(0.01, 0.05)
    return np.clip(img, 0, 1).astype(np.float32)
