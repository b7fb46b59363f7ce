"""Deterministic generator of BDD-style dash-cam street scenes with 7-class masks.

A pinhole camera looks down a (possibly curving) road. PIL draws every surface as a *material id* into one
8-bit canvas, far to near, so nearer things occlude farther ones. Look-up tables then turn material ids into
the class mask and into colour: albedo x texture, sunlight and shadows or night lamps and headlights, emitted
light (lamps), fog, rain or snow, white balance, vignette, sensor noise and blur. Random choices come from
numpy generators seeded by (seed, video) for the scene style and (seed, video, frame) for the frame, so a
frame does not depend on how many frames are generated, and frames of one video share their street.
"""
import math
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# ---------------------------------------------------------------- generator constants
SIZE = (640, 360)             # default frame (width, height): 16:9 like BDD100K's 1280x720
FRAMES_PER_VIDEO = 5          # frames per video; names are s<video>-<frame>
FOCAL = 0.8                   # focal length in frame widths (BDD's dash cams: ~1000 px at 1280)
Z_FAR = 250.0                 # metres: the farthest thing drawn
LANE_W = (3.0, 3.7)           # lane width range, metres
BG, ROAD, LIGHT, SIGN, PERSON, VEHICLE, BICYCLE, IGNORE = 0, 1, 2, 3, 4, 5, 6, 255

SCENES = {"city": 0.5, "residential": 0.25, "highway": 0.25}
TIMES = {"day": 0.55, "dusk": 0.15, "night": 0.30}
WEATHER = {"clear": 0.5, "overcast": 0.22, "rain": 0.14, "fog": 0.08, "snow": 0.06}
# Per-frame object statistics by scene (Poisson means or probabilities): they make classes as skewed as in
# real driving data (road and vehicles everywhere; signs often; lights, people and bicycles rare and small).
VEHICLES = {"city": 3.5, "residential": 1.5, "highway": 5.5}     # moving vehicles
PARKED = {"city": 3.0, "residential": 2.5, "highway": 0.0}
PEDESTRIANS = {"city": 1.3, "residential": 0.5, "highway": 0.02}
SIGNS = {"city": 1.8, "residential": 1.2, "highway": 1.2}
INTERSECTION_P = {"city": 0.7, "residential": 0.35, "highway": 0.0}
LIGHTS_AT_INTERSECTION_P = {"city": 0.9, "residential": 0.5, "highway": 0.0}
FAR_LIGHTS_P = {"city": 0.35, "residential": 0.1, "highway": 0.03}   # a farther junction's lights
BICYCLE_P = {"city": 0.3, "residential": 0.2, "highway": 0.01}
HOOD_P = 0.35                 # share of videos whose own bonnet is visible (labelled ignore, as in BDD)

VEHICLE_KINDS = {             # kind: (probability, width m, height m)
    "car": (0.60, 1.8, 1.45), "suv": (0.17, 1.9, 1.75), "van": (0.08, 2.0, 2.3),
    "truck": (0.07, 2.5, 3.6), "bus": (0.04, 2.55, 3.1), "motorcycle": (0.04, 0.8, 1.2)}
PAINTS = [(0.86, 0.86, 0.84), (0.07, 0.07, 0.08), (0.42, 0.43, 0.45), (0.66, 0.67, 0.69), (0.55, 0.07, 0.06),
          (0.10, 0.17, 0.38), (0.18, 0.24, 0.20), (0.58, 0.53, 0.44), (0.90, 0.72, 0.10), (0.30, 0.30, 0.32)]
PAINT_P = [0.24, 0.2, 0.14, 0.14, 0.08, 0.08, 0.03, 0.04, 0.02, 0.03]
FRAME_PAINTS = [(0.1, 0.1, 0.1), (0.6, 0.1, 0.1), (0.2, 0.3, 0.6), (0.75, 0.75, 0.75)]  # bicycles
CLOTHES = [(0.08, 0.08, 0.09), (0.15, 0.16, 0.2), (0.35, 0.36, 0.38), (0.12, 0.18, 0.35), (0.55, 0.52, 0.46),
           (0.6, 0.1, 0.1), (0.8, 0.8, 0.78), (0.25, 0.3, 0.18), (0.45, 0.3, 0.2), (0.7, 0.55, 0.2)]
SKIN = [(0.85, 0.68, 0.55), (0.7, 0.5, 0.38), (0.45, 0.3, 0.22), (0.3, 0.2, 0.15)]
FACADES = [(0.55, 0.5, 0.45), (0.62, 0.6, 0.56), (0.42, 0.36, 0.32), (0.5, 0.3, 0.25), (0.7, 0.66, 0.58),
           (0.35, 0.36, 0.38), (0.6, 0.55, 0.4), (0.75, 0.73, 0.7), (0.3, 0.28, 0.27)]
GREENS = [(0.18, 0.3, 0.12), (0.25, 0.36, 0.15), (0.14, 0.22, 0.1), (0.3, 0.35, 0.18), (0.35, 0.3, 0.15)]
SIGN_TYPES = [  # shape, plate colour, symbol colour, weight
    ("octagon", (0.7, 0.08, 0.08), (0.92, 0.92, 0.9), 0.08), ("tri_down", (0.92, 0.92, 0.9), (0.7, 0.1, 0.1), 0.08),
    ("triangle", (0.7, 0.1, 0.1), (0.92, 0.92, 0.9), 0.14), ("diamond", (0.9, 0.75, 0.1), (0.1, 0.1, 0.1), 0.12),
    ("circle", (0.75, 0.1, 0.1), (0.92, 0.92, 0.9), 0.16), ("circle", (0.1, 0.25, 0.6), (0.92, 0.92, 0.9), 0.1),
    ("rect", (0.92, 0.92, 0.9), (0.1, 0.1, 0.1), 0.14), ("rect", (0.1, 0.25, 0.6), (0.92, 0.92, 0.9), 0.1),
    ("rect", (0.08, 0.4, 0.2), (0.92, 0.92, 0.9), 0.08)]
SIGN_P = np.array([t[3] for t in SIGN_TYPES]) / sum(t[3] for t in SIGN_TYPES)
DEPTH_BINS = np.geomspace(1.5, Z_FAR, 16)  # object depths are quantised so materials can be shared
BLOCK = 16                    # rows per block of the per-pixel arithmetic (fits the CPU cache at 1280 px)


# ---------------------------------------------------------------- random helpers
def pick(rng, table):
    """A key of {key: probability} drawn with those probabilities."""
    keys = list(table)
    return keys[rng.choice(len(keys), p=np.array(list(table.values())) / sum(table.values()))]


def log_uniform(rng, lo, hi, size=None):
    """Samples spread evenly in log space (many far, few near objects)."""
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


def jitter(rng, rgb, amount=0.06, scale=None):
    """A colour varied a little in brightness (or by `scale`) and hue."""
    scale = rng.uniform(1 - amount, 1 + amount) if scale is None else scale
    shift = rng.normal(0, amount / 4, 3)
    return tuple(min(max(c * scale + d, 0.0), 1.0) for c, d in zip(rgb, shift.tolist()))


def mix(a, b, t):
    """Linear blend of two colours."""
    return tuple(x * (1 - t) + y * t for x, y in zip(a, b))


# ---------------------------------------------------------------- camera and canvas
class Camera:
    """Pinhole camera over a flat road: world X right, Y up, Z forward (metres); the road curves as X += c*Z^2."""

    def __init__(self, w, h, height, horizon, xv, curve):
        self.w, self.h, self.f, self.height = w, h, FOCAL * w, height
        self.yh, self.xv, self.curve = horizon * h, xv * w, curve
        self.z_near = self.f * height / (1.6 * h - self.yh)   # the ground row well below the frame bottom

    def project(self, X, Z, Y=0.0):
        """Image coordinates (x, y) of world points."""
        Z = np.maximum(Z, 0.3)
        return self.xv + self.f * (X + self.curve * Z * Z) / Z, self.yh + self.f * (self.height - Y) / Z

    def strip(self, X0, X1, Z0, Z1, Y=0.0, n=16):
        """Polygon of a ground strip from X0 to X1 between depths Z0 and Z1 (follows the curve)."""
        Z = np.geomspace(max(Z0, self.z_near), Z1, n)
        xl, yl = self.project(X0, Z, Y)
        xr, yr = self.project(X1, Z, Y)
        return list(zip(xl, yl)) + list(zip(xr[::-1], yr[::-1]))

    def wall(self, X, Z0, Z1, Y0, Y1):
        """Polygon of a vertical wall along the road at lateral position X."""
        Z0 = max(Z0, 0.5)
        (xa, xb), (ya, yb) = self.project(X, np.array([Z0, Z1]), Y0)
        _, (yc, yd) = self.project(X, np.array([Z0, Z1]), Y1)
        return [(xa, ya), (xb, yb), (xb, yd), (xa, yc)]


class Canvas:
    """Material-id image (what PIL draws) plus per-material tables: class, albedo, texture, depth, emission."""

    def __init__(self, w, h):
        self.w, self.h = w, h
        self.ids = Image.new("L", (w, h))
        self.draw = ImageDraw.Draw(self.ids)
        self.shade = Image.new("L", (w, h), 255)               # sun shadows (multiplied)
        self.shade_draw = ImageDraw.Draw(self.shade)
        self.light = Image.new("RGB", (w // 4, h // 4))         # lamp / headlight pools (illumination)
        self.light_draw = ImageDraw.Draw(self.light)
        self.glow = Image.new("RGB", (w // 4, h // 4))          # halos around light sources (added)
        self.glow_draw = ImageDraw.Draw(self.glow)
        self.props, self.cache = [], {}

    def mat(self, cls, rgb, tex=0.08, grain=0.05, depth=0.0, emit=(0, 0, 0), slope=0.0, y0=0.0):
        """Material id for these properties (shared when identical). depth 0 = on the ground; inf = sky."""
        if 0 < depth < Z_FAR:
            depth = float(DEPTH_BINS[min(int(np.searchsorted(DEPTH_BINS, depth)), len(DEPTH_BINS) - 1)])
        key = (cls, *(round(c, 2) for c in rgb), round(tex, 2), round(grain, 2), depth,
               *(round(c, 2) for c in emit), slope, y0)
        if key not in self.cache:
            if len(self.props) == 256:  # full: reuse a material of the same class
                return next(i for i, p in enumerate(self.props) if p[0] == cls)
            self.cache[key] = len(self.props)
            self.props.append((cls, *rgb, tex, grain, depth, *emit, slope, y0))
        return self.cache[key]

    def poly(self, pts, m):
        """Fill a polygon with material m."""
        self.draw.polygon([(float(x), float(y)) for x, y in pts], fill=m)

    def box(self, x0, y0, x1, y1, m, radius=0):
        """Fill an axis-aligned box (pixel corners in any order) with material m."""
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        if radius >= 1.5:
            self.draw.rounded_rectangle(box, radius=radius, fill=m)
        else:
            self.draw.rectangle(box, fill=m)

    def disc(self, x, y, rx, ry, m, width=0):
        """Fill (or outline, width > 0) an ellipse centred at (x, y)."""
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        box = [x - rx, y - ry, x + rx, y + ry]
        if width:
            self.draw.ellipse(box, outline=m, width=int(width))
        else:
            self.draw.ellipse(box, fill=m)

    def line(self, pts, m, width):
        """A polyline of the given pixel width."""
        self.draw.line([(float(x), float(y)) for x, y in pts], fill=m, width=max(1, int(round(width))))

    def halo(self, x, y, r, rgb, target="glow"):
        """A soft light spot (nested discs on the quarter-resolution light or glow map)."""
        draw = self.glow_draw if target == "glow" else self.light_draw
        for k in (1.0, 0.6, 0.3):
            c = tuple(int(min(255, v * 255 * (1.2 - k))) for v in rgb)
            rr = max(r * k / 4, 0.6)
            draw.ellipse([x / 4 - rr, y / 4 - rr, x / 4 + rr, y / 4 + rr], fill=c)

    def tables(self):
        """The material tables as float32 arrays of 256 rows."""
        t = np.zeros((256, 12), np.float32)
        t[:len(self.props)] = np.array(self.props, np.float32)
        return t


# ---------------------------------------------------------------- video style and street layout
def scene_style(rng):
    """Everything shared by the frames of one video: scene type, light, weather, road, palette, street."""
    s = SimpleNamespace(scene=pick(rng, SCENES), time=pick(rng, TIMES), weather=pick(rng, WEATHER))
    s.cam_h = rng.uniform(1.25, 1.6)
    s.horizon, s.xv = rng.uniform(0.40, 0.52), rng.uniform(0.42, 0.58)
    s.curve = rng.normal(0, 0.0004)
    s.lane_w = rng.uniform(*LANE_W)
    s.two_way = s.scene != "highway" or rng.random() < 0.2
    s.lanes_left = int(rng.integers(1, 3)) if s.scene != "residential" else 1
    s.lanes_right = int(rng.integers(1, 3 if s.scene == "city" else 4 if s.scene == "highway" else 2))
    s.ego_lane = int(rng.integers(0, s.lanes_right))                 # counted from the centre line
    s.sidewalk = {"city": rng.uniform(2.5, 5), "residential": rng.uniform(1.5, 2.5),
                  "highway": rng.uniform(2.0, 3.5)}[s.scene]          # highway: shoulder strip, not a sidewalk
    s.speed = rng.uniform(4, 9) if s.scene != "highway" else rng.uniform(12, 25)
    s.asphalt = jitter(rng, (0.33, 0.33, 0.34), 0.02, rng.uniform(0.6, 1.4))
    s.pavement = jitter(rng, mix(s.asphalt, (0.55, 0.53, 0.5), rng.uniform(0.2, 0.8)), 0.1)
    s.terrain = jitter(rng, GREENS[int(rng.integers(len(GREENS)))] if rng.random() < 0.7 else (0.4, 0.35, 0.28))
    s.facades = [jitter(rng, FACADES[i]) for i in rng.choice(len(FACADES), 4, replace=False)]
    s.greens = [jitter(rng, GREENS[i]) for i in rng.choice(len(GREENS), 2, replace=False)]
    s.hood = rng.random() < HOOD_P
    s.hood_h, s.hood_rgb = rng.uniform(0.06, 0.13), PAINTS[int(rng.choice(len(PAINTS), p=PAINT_P))]
    if s.weather == "snow":
        s.terrain, s.pavement = (0.85, 0.86, 0.9), mix(s.pavement, (0.85, 0.86, 0.9), 0.6)
    light_style(s, rng)
    s.street = [street_side(rng, s, side) for side in (-1, 1)]
    return s


def light_style(s, rng):
    """Sky colours, ambient light, fog, camera response for the video's time of day and weather."""
    grey = s.weather in ("overcast", "rain", "fog", "snow")
    if s.time == "day":
        s.sky_top, s.sky_bottom = ((0.55, 0.58, 0.62), (0.75, 0.76, 0.78)) if grey else \
            ((0.3, 0.5, 0.85), (0.7, 0.8, 0.92))
        s.ambient = (0.9, 0.9, 0.92) if grey else (1.05, 1.03, 1.0)
    elif s.time == "dusk":
        s.sky_top, s.sky_bottom = (0.25, 0.25, 0.45), (0.95, 0.6, 0.35) if not grey else (0.6, 0.5, 0.45)
        s.ambient = (0.7, 0.58, 0.5)
    else:
        s.sky_top, s.sky_bottom = (0.02, 0.03, 0.06), (0.12, 0.1, 0.12) if s.scene != "highway" else (0.05, 0.05, 0.08)
        s.ambient = tuple(np.array((0.16, 0.17, 0.22)) * rng.uniform(0.7, 1.4))
    s.sun = s.time != "night" and not grey and rng.random() < 0.8   # hard shadows
    s.sun_side = rng.choice([-1, 1])
    s.fog = {"fog": rng.uniform(30, 90), "rain": rng.uniform(150, 400), "snow": rng.uniform(80, 200)}.get(
        s.weather, rng.uniform(400, 1500))
    s.fog_rgb = mix(s.sky_bottom, (0.6, 0.6, 0.62), 0.5) if s.time != "night" else (0.08, 0.08, 0.1)
    s.tint = tuple(rng.normal(1, 0.04, 3).clip(0.88, 1.12))
    s.exposure, s.saturation = rng.uniform(0.85, 1.15), rng.uniform(0.6, 1.1) * (0.75 if grey else 1)
    s.noise = rng.uniform(0.01, 0.03) * (2.5 if s.time == "night" else 1)
    s.blur = rng.uniform(0.2, 0.9) + (0.4 if s.weather in ("rain", "fog") else 0)


def street_side(rng, s, side):
    """Roadside structures of one side along 0..600 m: (kind, z0, z1, height, setback, colour) plus props."""
    things, props, z = [], [], -20.0
    while z < 600:
        if s.scene == "city":
            kind, length = "building", rng.uniform(8, 30)
            height, setback = rng.uniform(6, 35), rng.uniform(0, 1.5)
            gap = rng.uniform(3, 10) if rng.random() < 0.15 else 0
        elif s.scene == "residential":
            kind = "house" if rng.random() < 0.7 else "hedge"
            length, height = rng.uniform(8, 16), rng.uniform(4, 9) if kind == "house" else rng.uniform(1, 2.5)
            setback, gap = rng.uniform(4, 12), rng.uniform(2, 12)
        else:
            kind = "treeline" if rng.random() < 0.7 else "wall"
            length, height = rng.uniform(20, 80), rng.uniform(6, 16) if kind == "treeline" else rng.uniform(2.5, 4)
            setback, gap = rng.uniform(3, 20), rng.uniform(0, 30)
        things.append((kind, z, z + length, height, setback, int(rng.integers(4))))
        z += length + gap
    spacing = {"city": 16, "residential": 12, "highway": 40}[s.scene]
    for z in np.arange(-20, 600, spacing) + rng.uniform(0, spacing):
        r = rng.random()
        kind = "tree" if r < (0.35 if s.scene == "city" else 0.6) else "lamp" if r < 0.8 else "pole"
        props.append((kind, float(z + rng.uniform(-3, 3)), rng.uniform(5, 11), int(rng.integers(2))))
    return SimpleNamespace(things=things, props=props, side=side)


def road_edges(s):
    """Lateral positions (m) of the road's left and right edges for the ego lane's centre at X=0."""
    right = (s.lanes_right - s.ego_lane - 0.5) * s.lane_w
    left = -(s.ego_lane + 0.5) * s.lane_w - (s.lanes_left * s.lane_w if s.two_way else 0.8)
    return left, right


# ---------------------------------------------------------------- background: sky, ground, road, roadside
def draw_sky(cv, cam, s):
    """Sky in graded bands (background); the top gets clouds through texture."""
    n, top = 8, cam.yh + 2
    grey = s.weather != "clear"
    for i in range(n):
        y0, y1 = top * i / n, top * (i + 1) / n
        m = cv.mat(BG, mix(s.sky_top, s.sky_bottom, (i / (n - 1)) ** 1.5), tex=0.25 if grey else 0.12,
                   grain=0.01, depth=math.inf)
        cv.box(-1, y0 - 1, cam.w + 1, y1 + 1, m)


def draw_skyline(cv, cam, s, rng):
    """Far buildings or tree line along the horizon, hazy (background)."""
    xs = np.linspace(-10, cam.w + 10, int(rng.integers(8, 30)))
    hmax = {"city": 0.16, "residential": 0.05, "highway": 0.04}[s.scene] * cam.h
    hs = rng.uniform(0.1, 1, len(xs)) * hmax
    pts = [(x, cam.yh - hh) for x, hh in zip(np.repeat(xs, 2)[1:], np.repeat(hs, 2)[:-1])] if s.scene == "city" \
        else list(zip(xs, cam.yh - hs))
    colour = mix(s.facades[0] if s.scene == "city" else s.greens[0], s.fog_rgb, 0.5)
    cv.poly(pts + [(cam.w + 10, cam.yh + 3), (-10, cam.yh + 3)], cv.mat(BG, colour, tex=0.1, depth=Z_FAR))


def draw_ground(cv, cam, s, rng, zx):
    """Terrain, pavements, road with patches, lane marks and a crosswalk at an intersection (zx)."""
    left, right = road_edges(s)
    cv.box(-1, cam.yh, cam.w + 1, cam.h + 1, cv.mat(BG, s.terrain, tex=0.25, grain=0.12))
    walk = cv.mat(BG, s.pavement, tex=0.12, grain=0.08)
    for a, b in ((left - s.sidewalk, left), (right, right + s.sidewalk)):
        cv.poly(cam.strip(a, b, 0, Z_FAR), walk)
    road = cv.mat(ROAD, s.asphalt, tex=0.12, grain=0.07)
    cv.poly(cam.strip(left, right, 0, Z_FAR), road)
    for _ in range(int(rng.integers(0, 4))):  # repaired patches / wet spots: still road
        x0, z0 = rng.uniform(left, right), log_uniform(rng, 4, 60)
        shade = jitter(rng, s.asphalt, 0.01, rng.uniform(0.7, 1.3))
        cv.poly(cam.strip(x0, x0 + rng.uniform(0.5, 3), z0, z0 + rng.uniform(2, 15), n=4), cv.mat(ROAD, shade, 0.1))
    for a, b in ((left - 0.2, left), (right, right + 0.2)):  # curbs
        cv.poly(cam.strip(a, b, 0, Z_FAR), cv.mat(BG, jitter(rng, (0.6, 0.6, 0.58)), 0.1))
    draw_lane_marks(cv, cam, s, rng, left, right)
    if zx:
        stripe = cv.mat(ROAD, (0.8, 0.8, 0.78), tex=0.15, grain=0.1)
        for x in np.arange(left + 0.3, right - 0.3, 1.0):
            cv.poly(cam.strip(x, x + 0.5, zx - 4, zx, n=3), stripe)


def draw_lane_marks(cv, cam, s, rng, left, right):
    """Dashed white lane lines, a yellow or white centre line and edge lines (all road class)."""
    white = cv.mat(ROAD, jitter(rng, (0.82, 0.82, 0.8)), tex=0.2, grain=0.12)
    phase, dash, gap = rng.uniform(0, 12), rng.uniform(2.5, 4), rng.uniform(6, 10)
    centre = -(s.ego_lane + 0.5) * s.lane_w
    for k in range(1, s.lanes_right):
        x = centre + k * s.lane_w
        for z in np.arange(phase, 120, dash + gap):
            cv.poly(cam.strip(x - 0.07, x + 0.07, z, z + dash, n=3), white)
    if s.two_way:
        colour = (0.8, 0.65, 0.15) if rng.random() < 0.6 else (0.82, 0.82, 0.8)
        cv.poly(cam.strip(centre - 0.18, centre + 0.02, 0, Z_FAR), cv.mat(ROAD, colour, tex=0.2, grain=0.12))
        for k in range(1, s.lanes_left):
            x = centre - k * s.lane_w
            for z in np.arange(phase, 120, dash + gap):
                cv.poly(cam.strip(x - 0.07, x + 0.07, z, z + dash, n=3), white)
    if s.scene == "highway":
        for x in (left + 0.3, right - 0.3):
            cv.poly(cam.strip(x - 0.08, x + 0.08, 0, Z_FAR), white)


def draw_roadside(cv, cam, s, rng, travel, zx):
    """Buildings, houses, hedges, walls and tree lines beside the road, far to near, cut at a cross street."""
    left, right = road_edges(s)
    for street in s.street:
        edge = (left - s.sidewalk) if street.side < 0 else (right + s.sidewalk)
        for kind, z0, z1, height, setback, colour in reversed(street.things):
            z0, z1 = z0 - travel, z1 - travel
            if z1 < 0.5 or z0 > Z_FAR:
                continue
            X = edge + street.side * setback
            pieces = [(z0, min(z1, zx - 5)), (max(z0, zx + 12), z1)] if zx else [(z0, z1)]
            for a, b in reversed(pieces):
                if b > a and b > 0.5:
                    draw_facade(cv, cam, s, rng, kind, X, a, min(b, Z_FAR), height, colour)
            if s.sun and street.side == s.sun_side and kind in ("building", "wall", "treeline"):
                reach = min(height * 0.5, abs(X) + abs(right if X > 0 else left))
                cv.shade_draw.polygon(cam.strip(X, X - street.side * reach, max(z0, 0.5), z1, n=6), fill=120)


def draw_facade(cv, cam, s, rng, kind, X, z0, z1, height, colour):
    """One wall facing the road, with windows in perspective (buildings and houses)."""
    depth = max((z0 + z1) / 2, 2)
    if kind in ("treeline", "hedge"):
        m = cv.mat(BG, s.greens[colour % 2], tex=0.45, grain=0.3, depth=depth)
        zs = np.linspace(max(z0, 0.5), z1, 12)
        tops = height * rng.uniform(0.75, 1.1, len(zs))
        x_base, y_base = cam.project(X, zs)
        x_top, y_top = cam.project(X, zs, tops)
        cv.poly(list(zip(x_base, y_base)) + list(zip(x_top[::-1], y_top[::-1])), m)
        return
    base = s.facades[colour] if kind != "wall" else (0.55, 0.55, 0.53)
    cv.poly(cam.wall(X, z0, z1, 0, height), cv.mat(BG, base, tex=0.07, grain=0.1, depth=depth))
    if kind == "wall":
        return
    if kind == "house":  # roof edge
        cv.poly(cam.wall(X, z0, z1, height, height + 1.2), cv.mat(BG, (0.3, 0.2, 0.18), 0.2, 0.1, depth=depth))
    night = s.time == "night"
    glass = [cv.mat(BG, (0.12, 0.14, 0.17), tex=0.25, grain=0.05, depth=depth),
             cv.mat(BG, mix(s.sky_bottom, (0.2, 0.2, 0.22), 0.5), tex=0.25, grain=0.05, depth=depth),
             cv.mat(BG, (0.2, 0.17, 0.1), tex=0.2, depth=depth, emit=(0.55, 0.45, 0.25) if night else (0, 0, 0))]
    col, row = rng.uniform(2.5, 4), rng.uniform(2.8, 3.4)
    zs = np.arange(max(z0, 1.0) + 0.6, z1 - 1.2, col)
    ys = np.arange(0.9 if kind == "house" else 3.4, height - 1.4, row)
    if len(zs) == 0 or len(ys) == 0 or cam.f * 1.2 / zs[0] < 1.5:
        return
    choice = rng.choice(3, (len(zs), len(ys)), p=[0.5, 0.3, 0.2])
    shop = kind == "building" and rng.random() < 0.6
    if shop:  # a shop front or advert at street level: colourful, still background
        ad = jitter(rng, [(0.8, 0.15, 0.1), (0.9, 0.8, 0.2), (0.15, 0.3, 0.7), (0.9, 0.9, 0.9)][int(rng.integers(4))])
        cv.poly(cam.wall(X, max(z0, 0.5) + 0.5, min(z1, z0 + rng.uniform(3, 10)), 2.6, 3.2),
                cv.mat(BG, ad, 0.1, 0.1, depth=depth, emit=(0.3, 0.3, 0.3) if night else (0, 0, 0)))
        cv.poly(cam.wall(X, max(z0, 0.5) + 0.3, z1 - 0.3, 0.2, 2.5), glass[1])
    zs = zs[cam.f * 1.2 / zs >= 1.5]  # windows narrower than 1.5 px are not drawn
    z, y = np.meshgrid(zs, ys, indexing="ij")
    (xa, ya), (xb, yb) = cam.project(X, z, y), cam.project(X, z + 1.2, y)
    _, yc = cam.project(X, z, y + 1.5)
    _, yd = cam.project(X, z + 1.2, y + 1.5)
    for q in zip(xa.ravel(), ya.ravel(), xb.ravel(), yb.ravel(), yd.ravel(), yc.ravel(), choice[:len(zs)].ravel()):
        cv.draw.polygon([(q[0], q[1]), (q[2], q[3]), (q[2], q[4]), (q[0], q[5])], fill=glass[q[6]])


# ---------------------------------------------------------------- objects (vehicles, people, bicycles, lights, signs)
def draw_vehicle(cv, cam, s, rng, X, Z, front):
    """A vehicle seen from behind (front=False) or from the front: body, cabin, glass, tyres, lights."""
    kind = pick(rng, {k: v[0] for k, v in VEHICLE_KINDS.items()})
    _, w, h = VEHICLE_KINDS[kind]
    w, h = w * rng.uniform(0.93, 1.07), h * rng.uniform(0.93, 1.07)
    px, py = cam.project(X, Z)
    k = cam.f / Z
    paint = PAINTS[int(rng.choice(len(PAINTS), p=PAINT_P))]
    if kind == "bus":
        paint = [(0.9, 0.7, 0.1), (0.85, 0.85, 0.85), (0.7, 0.12, 0.1)][int(rng.integers(3))]
    body = cv.mat(VEHICLE, jitter(rng, paint, 0.05), tex=0.1, grain=0.04, depth=Z)
    dark = cv.mat(VEHICLE, (0.05, 0.05, 0.06), tex=0.1, grain=0.05, depth=Z)
    glass = cv.mat(VEHICLE, mix(s.sky_bottom, (0.05, 0.06, 0.08), 0.6), tex=0.3, grain=0.05, depth=Z)
    cv.shade_draw.ellipse([px - 0.65 * w * k, py - 0.12 * k, px + 0.65 * w * k, py + 0.15 * k], fill=70)
    if kind == "motorcycle":
        cv.box(px - 0.08 * k, py, px + 0.08 * k, py - 0.65 * k, dark)
        cv.box(px - 0.3 * k, py - 0.45 * k, px + 0.3 * k, py - 0.95 * k, body, radius=0.1 * k)
        draw_person(cv, cam, s, rng, X, Z, base=0.55, pose="ride")
        draw_lamps(cv, cam, s, rng, px, py, k, [(0, 0.8)], 0.06, front, Z)
        return
    cv.box(px - w / 2 * k, py, px - (w / 2 - 0.3) * k, py - 0.45 * k, dark)       # tyres
    cv.box(px + w / 2 * k, py, px + (w / 2 - 0.3) * k, py - 0.45 * k, dark)
    low = 0.55 if kind in ("car", "suv") else 0.8
    if kind in ("truck", "van", "bus"):
        cv.box(px - w / 2 * k, py - 0.25 * k, px + w / 2 * k, py - h * k, body, radius=0.08 * k)
        if kind == "bus" or (kind == "van" and front):
            cv.box(px - 0.45 * w * k, py - 0.55 * h * k, px + 0.45 * w * k, py - 0.92 * h * k, glass)
        elif kind == "truck":  # cargo doors
            cv.line([(px, py - 0.3 * k), (px, py - 0.95 * h * k)], dark, 0.04 * k)
    else:
        cv.box(px - w / 2 * k, py - 0.22 * k, px + w / 2 * k, py - low * h * k, body, radius=0.1 * k)
        top, mid = py - h * k, py - low * h * k
        cv.poly([(px - 0.47 * w * k, mid), (px + 0.47 * w * k, mid), (px + 0.36 * w * k, top),
                 (px - 0.36 * w * k, top)], body)
        cv.poly([(px - 0.41 * w * k, mid - 0.04 * k), (px + 0.41 * w * k, mid - 0.04 * k),
                 (px + 0.33 * w * k, top + 0.08 * k), (px - 0.33 * w * k, top + 0.08 * k)], glass)
    cv.box(px - 0.5 * w * k, py - 0.2 * k, px + 0.5 * w * k, py - 0.35 * k, dark)        # bumper
    cv.box(px - 0.16 * k, py - 0.38 * k, px + 0.16 * k, py - 0.5 * k,
           cv.mat(VEHICLE, (0.85, 0.85, 0.8), 0.05, 0.05, depth=Z))                       # plate
    y = 0.62 if kind in ("car", "suv") else 0.75
    draw_lamps(cv, cam, s, rng, px, py, k, [(-0.4 * w, y), (0.4 * w, y)], 0.11, front, Z)


def draw_lamps(cv, cam, s, rng, px, py, k, spots, r, front, Z):
    """Tail lights (red) or headlights (white), lit at night or when braking, with halos."""
    night = s.time == "night"
    lit = night or (s.time == "dusk" and rng.random() < 0.7) or rng.random() < (0.5 if front else 0.25)
    colour = (1.0, 0.95, 0.85) if front else (0.9, 0.08, 0.05)
    m = cv.mat(VEHICLE, colour if not lit else mix(colour, (1, 1, 1), 0.3), 0.05, 0.05, depth=Z,
               emit=tuple(c * 0.8 for c in colour) if lit else (0, 0, 0))
    for dx, dy in spots:
        cv.disc(px + dx * k, py - dy * k, r * k, r * 0.7 * k, m)
        if lit:
            cv.halo(px + dx * k, py - dy * k, (6 if front else 2.5) * r * k * (2 if night else 0.6),
                    tuple(c * (0.7 if night else 0.25) for c in colour))


def draw_person(cv, cam, s, rng, X, Z, base=0.0, pose="walk", facing=None):
    """A pedestrian (or a rider on a bike/motorbike): legs, torso, arms, head; small unless close."""
    px, py = cam.project(X, Z)
    k = cam.f / Z
    hm = rng.normal(1.72, 0.08) if rng.random() > 0.1 else rng.uniform(1.0, 1.4)
    u = hm / 1.72 * k  # pixels per "body metre"
    py -= base * k
    top = cv.mat(PERSON, jitter(rng, CLOTHES[int(rng.integers(len(CLOTHES)))]), 0.15, 0.08, depth=Z)
    legs = cv.mat(PERSON, jitter(rng, CLOTHES[int(rng.integers(5))]), 0.15, 0.08, depth=Z)
    skin = cv.mat(PERSON, SKIN[int(rng.integers(len(SKIN)))], 0.05, 0.05, depth=Z)
    hair = cv.mat(PERSON, (0.08, 0.06, 0.05) if rng.random() < 0.7 else (0.45, 0.35, 0.2), 0.1, 0.05, depth=Z)
    side = facing if facing is not None else (0 if rng.random() < 0.6 else rng.choice([-1, 1]))
    stride = rng.uniform(-0.3, 0.3) if side else rng.uniform(-0.05, 0.05)
    if pose == "ride":
        hip, knee = (px, py - 0.35 * u), 0.18 * u
        cv.line([hip, (px - knee, py + 0.05 * u), (px - 0.1 * u, py + 0.3 * u)], legs, 0.14 * u)
        cv.line([hip, (px + knee, py - 0.05 * u), (px + 0.1 * u, py + 0.25 * u)], legs, 0.14 * u)
        shoulder_y = py - 0.95 * u
    else:
        hip = (px, py - 0.9 * u)
        for d in (-1, 1):
            foot = px + (d * 0.1 * u if not side else d * stride * u)
            cv.line([(px + d * 0.07 * u, hip[1]), (foot, py)], legs, 0.14 * u)
        shoulder_y = py - 1.45 * u
    wt = 0.2 if not side else 0.13
    cv.poly([(hip[0] - wt * u, hip[1] + 0.05 * u), (hip[0] + wt * u, hip[1] + 0.05 * u),
             (px + (wt + 0.02) * u, shoulder_y), (px - (wt + 0.02) * u, shoulder_y)], top)
    swing = rng.uniform(-0.15, 0.15)
    for d in (-1, 1):
        sx = px + d * (wt + 0.02) * u
        cv.line([(sx, shoulder_y + 0.03 * u), (sx + (d * 0.05 + swing * d) * u, shoulder_y + 0.6 * u)], top, 0.09 * u)
    hy = shoulder_y - 0.17 * u
    cv.disc(px, hy, 0.1 * u, 0.12 * u, skin if side or rng.random() < 0.5 else hair)
    cv.disc(px, hy - 0.05 * u, 0.1 * u, 0.07 * u, hair)
    if rng.random() < 0.2:  # a bag: part of the person
        cv.box(px + 0.15 * u, shoulder_y + 0.35 * u, px + 0.35 * u, shoulder_y + 0.7 * u,
               cv.mat(PERSON, jitter(rng, CLOTHES[int(rng.integers(4))]), 0.1, 0.05, depth=Z))
    cv.shade_draw.ellipse([px - 0.3 * k, py + base * k - 0.05 * k, px + 0.3 * k, py + base * k + 0.08 * k], fill=110)


def draw_bicycle(cv, cam, s, rng, X, Z, rider):
    """A bicycle, side on (wheels, frame, bars) or from behind, with a rider (person class) or parked."""
    px, py = cam.project(X, Z)
    k = cam.f / Z
    frame_rgb = jitter(rng, FRAME_PAINTS[int(rng.integers(len(FRAME_PAINTS)))])
    tyre = cv.mat(BICYCLE, (0.06, 0.06, 0.06), 0.1, 0.05, depth=Z)
    frame = cv.mat(BICYCLE, frame_rgb, 0.1, 0.05, depth=Z)
    side_on = not rider or rng.random() < 0.5
    if side_on:
        d = rng.choice([-1, 1])
        r, hb = 0.34 * k, 0.52 * k
        for hx in (-hb, hb):
            cv.disc(px + d * hx, py - r, r, r, tyre, width=max(1, 0.06 * k))
        bb, seat, head = (px, py - 0.3 * k), (px - d * 0.18 * k, py - 0.95 * k), (px + d * 0.38 * k, py - 0.98 * k)
        cv.line([(px - d * hb, py - r), bb, head, (px + d * hb, py - r)], frame, 0.05 * k)
        cv.line([(px - d * hb, py - r), seat, bb], frame, 0.05 * k)
        cv.line([head, (head[0] + d * 0.05 * k, head[1] - 0.12 * k)], frame, 0.05 * k)
        if rider:
            draw_person(cv, cam, s, rng, X - d * 0.1, Z, base=0.5, pose="ride", facing=d)
    else:
        cv.box(px - 0.03 * k, py, px + 0.03 * k, py - 0.68 * k, tyre)
        cv.line([(px - 0.3 * k, py - 1.0 * k), (px + 0.3 * k, py - 1.0 * k)], frame, 0.04 * k)
        draw_person(cv, cam, s, rng, X, Z + 0.3, base=0.5, pose="ride", facing=0)
        cv.box(px - 0.03 * k, py, px + 0.03 * k, py - 0.5 * k, tyre)  # rear wheel in front of the legs


def draw_pole(cv, cam, X, Z, height, rgb=(0.45, 0.45, 0.45), width=0.12):
    """A vertical pole (background class) from the ground to `height`."""
    px, py = cam.project(X, Z)
    k = cam.f / Z
    cv.box(px - width / 2 * k, py, px + width / 2 * k, py - height * k,
           cv.mat(BG, rgb, 0.1, 0.05, depth=Z))
    return px, py, k


def draw_traffic_light(cv, cam, s, rng, X, Z, overhead_X=None):
    """Traffic light on a pole (or hanging from a mast arm over the road): housing and three lamps."""
    height = rng.uniform(2.6, 4.0) if overhead_X is None else rng.uniform(5.0, 6.2)
    px, py, k = draw_pole(cv, cam, X, Z, height + 0.6)
    hx = px
    if overhead_X is not None:
        ax, _ = cam.project(overhead_X, Z)
        cv.box(px, py - (height + 0.55) * k, ax, py - (height + 0.65) * k, cv.mat(BG, (0.45, 0.45, 0.45), 0.1, depth=Z))
        hx = ax
    housing_rgb = (0.08, 0.08, 0.08) if rng.random() < 0.75 else (0.7, 0.6, 0.1)
    housing = cv.mat(LIGHT, jitter(rng, housing_rgb), 0.1, 0.05, depth=Z)
    horizontal = rng.random() < 0.15
    hw, hh = (1.1, 0.42) if horizontal else (0.42, 1.1)
    top = py - height * k - (0.0 if overhead_X is None else -0.2 * k)
    if rng.random() < 0.4:  # backplate with a bright border
        plate = cv.mat(LIGHT, (0.75, 0.7, 0.2) if rng.random() < 0.5 else (0.1, 0.1, 0.1), 0.1, 0.05, depth=Z)
        cv.box(hx - (hw / 2 + 0.12) * k, top - 0.12 * k, hx + (hw / 2 + 0.12) * k, top + (hh + 0.12) * k, plate)
    cv.box(hx - hw / 2 * k, top, hx + hw / 2 * k, top + hh * k, housing, radius=0.05 * k)
    if rng.random() < 0.25:  # seen from behind or the side: housing only
        return
    state = int(rng.choice(3, p=[0.45, 0.1, 0.45]))
    colours = [(1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.2, 1.0, 0.6)]
    for i, c in enumerate(colours):
        off = (i - 1) * 0.3 * k
        cx, cy = (hx + off, top + hh / 2 * k) if horizontal else (hx, top + hh / 2 * k + off)
        lit = i == state
        m = cv.mat(LIGHT, c if lit else (0.12, 0.12, 0.1), 0.05, 0.05, depth=Z,
                   emit=tuple(v * 0.6 for v in c) if lit else (0, 0, 0))
        cv.disc(cx, cy, 0.11 * k, 0.11 * k, m)
        if lit:
            cv.halo(cx, cy, 0.5 * k * (2.5 if s.time == "night" else 0.8), tuple(v * 0.6 for v in c))


def draw_sign(cv, cam, s, rng, X, Z):
    """A traffic sign on a pole: plate of one of several shapes and colours with a symbol."""
    shape, plate_rgb, symbol_rgb, _ = SIGN_TYPES[int(rng.choice(len(SIGN_TYPES),
                                                               p=SIGN_P))]
    size = rng.uniform(0.55, 0.9) * (1.3 if shape == "rect" else 1)
    height = rng.uniform(1.8, 2.8)
    px, py, k = draw_pole(cv, cam, X, Z, height + size / 2, width=0.07)
    cx, cy, r = px, py - (height + size / 2) * k, size / 2 * k
    plate = cv.mat(SIGN, jitter(rng, plate_rgb, 0.08), 0.08, 0.05, depth=Z)
    symbol = cv.mat(SIGN, jitter(rng, symbol_rgb, 0.08), 0.08, 0.05, depth=Z)
    sign_shape(cv, shape, cx, cy, r, plate, rng.uniform(0.65, 1.4) if shape == "rect" else 1)
    sign_shape(cv, shape, cx, cy, r * 0.72, symbol, rng.uniform(0.65, 1.4) if shape == "rect" else 1)
    if rng.random() < 0.5:  # a glyph: bar or dot in the plate colour
        cv.box(cx - 0.4 * r, cy - 0.12 * r, cx + 0.4 * r, cy + 0.12 * r, plate)


def sign_shape(cv, shape, cx, cy, r, m, aspect=1.0):
    """Fill one sign shape centred at (cx, cy) with 'radius' r."""
    if shape in ("circle",):
        cv.disc(cx, cy, r, r, m)
    elif shape == "rect":
        cv.box(cx - r * aspect, cy - r, cx + r * aspect, cy + r, m)
    else:
        n, rot = {"octagon": (8, math.pi / 8), "triangle": (3, -math.pi / 2), "tri_down": (3, math.pi / 2),
                  "diamond": (4, 0)}[shape]
        a = rot + np.arange(n) * 2 * math.pi / n
        cv.poly(list(zip(cx + r * np.cos(a), cy + r * np.sin(a))), m)


def draw_overhead_sign(cv, cam, s, rng, Z):
    """A big green direction sign on a gantry over a highway."""
    left, right = road_edges(s)
    for X in (left - 0.5, right + 0.5):
        draw_pole(cv, cam, X, Z, 6.5, width=0.3)
    (xl, xr), y = cam.project(np.array([left, right]), Z, 6.2)
    k = cam.f / Z
    cv.box(xl, y, xr, y - 0.3 * k, cv.mat(BG, (0.5, 0.5, 0.5), 0.1, depth=Z))
    x0 = rng.uniform(xl, max(xl, xr - 4 * k))
    plate = cv.mat(SIGN, jitter(rng, (0.08, 0.4, 0.2)), 0.1, 0.05, depth=Z)
    cv.box(x0, y - 0.1 * k, x0 + rng.uniform(3, 5) * k, y + 2.0 * k, plate)


def draw_tree(cv, cam, s, X, Z, height, tone, rng):
    """A street tree: trunk and a textured crown of several blobs (background)."""
    px, py, k = draw_pole(cv, cam, X, Z, height * 0.6, rgb=(0.28, 0.2, 0.14), width=0.3)
    m = cv.mat(BG, s.greens[tone], tex=0.5, grain=0.35, depth=Z)
    r = height * 0.3 * k
    for _ in range(5):
        cv.disc(px + rng.normal(0, 0.5) * r, py - height * 0.7 * k + rng.normal(0, 0.35) * r,
                r * rng.uniform(0.5, 0.9), r * rng.uniform(0.45, 0.8), m)


def draw_street_lamp(cv, cam, s, X, Z, height, side):
    """A street lamp (background): pole, arm over the road, head that glows at night."""
    px, py, k = draw_pole(cv, cam, X, Z, height, width=0.18)
    hx = px - side * 1.5 * k
    cv.box(px, py - height * k, hx, py - (height - 0.12) * k, cv.mat(BG, (0.45, 0.45, 0.45), 0.1, depth=Z))
    night = s.time == "night"
    head = cv.mat(BG, (0.6, 0.6, 0.55), 0.05, 0.05, depth=Z, emit=(0.9, 0.7, 0.4) if night else (0, 0, 0))
    cv.box(hx - 0.35 * k, py - height * k, hx + 0.35 * k, py - (height - 0.2) * k, head)
    if night:
        cv.halo(hx, py - height * k, 2.0 * k, (0.7, 0.5, 0.25))
        gx, gy = cam.project(X - side * 1.5, Z)
        cv.halo(gx, gy, 5 * k, (0.8, 0.6, 0.35), target="light")


# ---------------------------------------------------------------- frame assembly
def place_objects(cv, cam, s, rng, travel, zx):
    """Every object of the frame as (depth, draw) so they can be painted far to near."""
    left, right = road_edges(s)
    centre = -(s.ego_lane + 0.5) * s.lane_w
    out = []
    for _ in range(rng.poisson(VEHICLES[s.scene])):  # moving traffic in the lanes
        lane = int(rng.integers(-s.lanes_left if s.two_way else 0, s.lanes_right))
        X = centre + (lane + 0.5) * s.lane_w + rng.normal(0, 0.25)
        Z = log_uniform(rng, 9 if abs(X) < s.lane_w / 2 else 5, 140)
        out.append((Z, lambda X=X, Z=Z, f=lane < 0: draw_vehicle(cv, cam, s, rng, X, Z, front=f)))
    for _ in range(rng.poisson(PARKED[s.scene])):  # parked along the kerbs
        side = rng.choice([-1, 1])
        X = (right - 1.1) if side > 0 else (left + 1.1)
        Z = log_uniform(rng, 4, 80)
        out.append((Z, lambda X=X, Z=Z, f=side < 0 and s.two_way: draw_vehicle(cv, cam, s, rng, X, Z, front=f)))
    for _ in range(rng.poisson(PEDESTRIANS[s.scene])):  # people: mostly far, on the pavements
        crossing = zx and rng.random() < 0.3
        for j in range(1 if rng.random() < 0.75 else int(rng.integers(2, 4))):  # alone or in a group
            if crossing:
                X, Z = rng.uniform(left, right), zx - rng.uniform(0.5, 3.5)
            else:
                side = rng.choice([-1, 1])
                X = (right + rng.uniform(0.4, s.sidewalk)) if side > 0 else (left - rng.uniform(0.4, s.sidewalk))
                Z = log_uniform(rng, 7, 70)
            X, Z = X + j * rng.uniform(0.4, 0.8), Z + j * rng.uniform(-1, 1)
            out.append((Z, lambda X=X, Z=Z, c=crossing: draw_person(cv, cam, s, rng, X, Z,
                                                                    facing=rng.choice([-1, 1]) if c else None)))
    if rng.random() < BICYCLE_P[s.scene]:
        rider = rng.random() < 0.6
        X = (right - 0.6) if rider else (right + rng.uniform(0.5, s.sidewalk))
        Z = log_uniform(rng, 6, 45)
        out.append((Z, lambda X=X, Z=Z: draw_bicycle(cv, cam, s, rng, X, Z, rider)))
    if zx and rng.random() < LIGHTS_AT_INTERSECTION_P[s.scene]:
        for X in (right + 0.6, left - 0.6)[:int(rng.integers(1, 3))]:
            Z = zx + rng.uniform(-1, 1)
            over = rng.uniform(left + 1, right - 1) if rng.random() < 0.5 else None
            out.append((Z, lambda X=X, Z=Z, o=over: draw_traffic_light(cv, cam, s, rng, X, Z, o)))
        if rng.random() < 0.6:  # the far side of the crossing
            Z = zx + rng.uniform(14, 22)
            out.append((Z, lambda Z=Z: draw_traffic_light(cv, cam, s, rng, left - 0.6, Z, rng.uniform(left, right))))
    if rng.random() < FAR_LIGHTS_P[s.scene]:
        Z = rng.uniform(60, 110)
        for X in (right + 0.6, rng.uniform(left, right))[:int(rng.integers(1, 3))]:
            out.append((Z, lambda X=X, Z=Z: draw_traffic_light(cv, cam, s, rng, right + 0.6, Z, X)))
    for _ in range(rng.poisson(SIGNS[s.scene])):
        side = rng.choice([-1, 1], p=[0.3, 0.7])
        X = (right + rng.uniform(0.3, 1.5)) if side > 0 else (left - rng.uniform(0.3, 1.5))
        Z = log_uniform(rng, 6, 90)
        out.append((Z, lambda X=X, Z=Z: draw_sign(cv, cam, s, rng, X, Z)))
    if s.scene == "highway" and rng.random() < 0.3:
        Z = rng.uniform(40, 150)
        out.append((Z, lambda Z=Z: draw_overhead_sign(cv, cam, s, rng, Z)))
    for street in s.street:  # trees, lamps and utility poles from the video's street
        X = (right + s.sidewalk - 0.6) if street.side > 0 else (left - s.sidewalk + 0.6)
        for kind, z, height, tone in street.props:
            Z = z - travel
            if not 1.0 < Z < 150:
                continue
            if kind == "tree":
                out.append((Z, lambda X=X, Z=Z, h=height, t=tone: draw_tree(cv, cam, s, X, Z, h, t, rng)))
            elif kind == "lamp":
                out.append((Z, lambda X=X, Z=Z, sd=street.side: draw_street_lamp(cv, cam, s, X, Z, 8.5, sd)))
            else:
                out.append((Z, lambda X=X, Z=Z: draw_pole(cv, cam, X, Z, 7.0, rgb=(0.35, 0.28, 0.22), width=0.25)))
    return out


def draw_hood(cv, cam, s):
    """The ego car's bonnet at the bottom of the frame: labelled ignore (255) as BDD does."""
    top = cam.h * (1 - s.hood_h)
    m = cv.mat(IGNORE, s.hood_rgb, tex=0.3, grain=0.03, depth=1.0, slope=0.4, y0=top)
    cv.disc(cam.w / 2, top + cam.h * s.hood_h * 3, cam.w * 0.8, cam.h * s.hood_h * 3, m)


def draw_night_light(cv, cam, s):
    """Own headlights lighting the road ahead at night."""
    for k, (z0, v) in enumerate(((30, 0.25), (18, 0.45), (10, 0.7))):
        pts = cam.strip(-1.6 - k * 0.3, 1.6 + k * 0.3, 0, z0, n=6)
        cv.light_draw.polygon([(x / 4, y / 4) for x, y in pts], fill=tuple(int(255 * v * c) for c in (1, 0.95, 0.85)))


def weather_layer(h, w, s, rng):
    """Rain streaks or snow flakes to add to the finished picture (h x w x 1 float32), or None."""
    if s.weather not in ("rain", "snow"):
        return None
    layer = Image.new("L", (w, h))
    d = ImageDraw.Draw(layer)
    n = int(rng.integers(150, 400) * w * h / 230400)
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    if s.weather == "rain":
        ln, slant = rng.uniform(0.03, 0.07) * h, rng.uniform(-0.3, 0.3)
        for x, y in zip(xs, ys):
            d.line([(x, y), (x + slant * ln, y + ln)], fill=int(rng.integers(40, 90)), width=1)
    else:
        rs = rng.uniform(0.5, 2.0, n) * h / 360
        for x, y, r in zip(xs, ys, rs):
            d.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(120, 230)))
    return np.asarray(layer, np.float32)[..., None] / 255 * 0.6


def render(cv, cam, s, rng):
    """Turn the material canvas into the RGB picture (uint8) and the class mask.

    Whole-frame layers (noise crops, shadows, lamp light, glow, weather, fog by row) are made first; the per-pixel
    arithmetic then runs on blocks of BLOCK rows that stay in the CPU cache (same float operations per pixel)."""
    h, w = cam.h, cam.w
    ids = np.asarray(cv.ids)
    t = cv.tables()
    fine, coarse, sensor = noise_fields(h, w, rng)
    shade = np.asarray(cv.shade, np.float32)[..., None] / 255 if s.sun else None
    light = lamp_map(cv.light, 2, w, h) if s.time == "night" else None
    glow = lamp_map(cv.glow, 1.5, w, h) if cv.glow.getbbox() else None
    weather = weather_layer(h, w, s, rng)
    rows = cam.f * cam.height / np.maximum(np.arange(h, dtype=np.float32) - cam.yh, 0.5)
    sky_fog, mat_fog = (1 - np.exp(-rows / s.fog))[:, None], 1 - np.exp(-t[:, 6] / s.fog)
    gradient, emits = t[:, 10].any(), t[:, 7:10].any()
    yy = np.arange(h, dtype=np.float32)[:, None]
    ambient, fog_rgb, matrix = np.array(s.ambient, np.float32), np.array(s.fog_rgb, np.float32), colour_matrix(s)
    img = np.empty((h, w, 3), np.float32)
    for r in (slice(r0, min(r0 + BLOCK, h)) for r0 in range(0, h, BLOCK)):
        m = ids[r].astype(np.intp)  # once, not in every take
        lum = 1 + np.take(t[:, 4], m) * coarse[r] + np.take(t[:, 5], m) * fine[r]
        if gradient:  # vertical gradients (sky, bonnet)
            lum += np.take(t[:, 10] / h, m) * (yy[r] - np.take(t[:, 11], m))
        illum = ambient * (shade[r] if s.sun else 1)
        if light is not None:
            illum = illum + light[r] * (1.5 / 255)
        px = np.take(t[:, 1:4], m, axis=0) * (lum[..., None] * illum)
        if emits:
            px += np.take(t[:, 7:10], m, axis=0)
        fog = np.where(np.take(t[:, 6] == 0, m), sky_fog[r], np.take(mat_fog, m))[..., None]
        px += (fog_rgb - px) * fog
        if glow is not None:
            px += glow[r] * (1 / 255)
        if weather is not None:
            px += weather[r]
        np.matmul(px, matrix, out=img[r])  # saturation, white balance and exposure in one step
        img[r] *= vignette(h, w)[r]
    img = soften(img, s.blur * h / 360)
    rgb = np.empty((h, w, 3), np.uint8)
    for r in (slice(r0, min(r0 + BLOCK, h)) for r0 in range(0, h, BLOCK)):
        px = img[r] + s.noise * sensor[r]
        px *= 255
        rgb[r] = np.clip(px, 0, 255, out=px)
    return rgb, np.take(t[:, 0].astype(np.uint8), ids)


def lamp_map(layer, radius, w, h):
    """A quarter-resolution light layer blurred and resized to w x h (float32, 0-255), computed only over the columns
    of its lit part: PIL's bilinear 4x upscale of a full-height box uses the whole image's weights (a box that also
    cuts rows does not), and the other columns are 0."""
    layer = layer.filter(ImageFilter.GaussianBlur(radius))
    box = layer.getbbox()
    if w % 4 or h % 4 or box is None:  # (no exact 4x scale: the whole layer)
        return np.asarray(layer.resize((w, h), Image.BILINEAR), np.float32)
    x0, x1 = max(box[0] - 2, 0), min(box[2] + 2, layer.width)  # bilinear weights reach one source pixel beyond
    out = np.zeros((h, w, 3), np.float32)
    out[:, 4 * x0:4 * x1] = layer.resize((4 * (x1 - x0), h), Image.BILINEAR, (x0, 0, x1, layer.height))
    return out


def soften(img, sigma):
    """Gaussian-like blur of an HxWx3 float image: separable [a, 1-2a, a] passes (edges repeated), each adding
    variance 2a <= 0.5; per pass, blocks of rows are blurred down the columns, then along the rows, in the cache."""
    passes = int(math.ceil(sigma * sigma / 0.5)) if sigma > 0.2 else 0
    if not passes:
        return img
    a = sigma * sigma / passes / 2
    h, src, dst = img.shape[0], img, np.empty_like(img)
    col = np.empty((BLOCK,) + img.shape[1:], img.dtype)
    for _ in range(passes):
        for r0 in range(0, h, BLOCK):
            r1 = min(r0 + BLOCK, h)
            v = col[:r1 - r0]
            np.multiply(src[r0:r1], 1 - 2 * a, out=v)  # down the columns: row above, then row below
            near = a * src[max(r0 - 1, 0):r1 + 1]  # a x (rows r0-1 .. r1), computed once for both neighbours
            if r0:
                v += near[:r1 - r0]
            else:
                v[1:] += near[:r1 - 1]
                v[0] += near[0]
            if r1 < h:
                v += near[-(r1 - r0):]
            else:
                v[:-1] += near[-(r1 - r0 - 1):] if r1 - r0 > 1 else near[:0]
                v[-1] += near[-1]
            o = np.multiply(v, 1 - 2 * a, out=dst[r0:r1])  # along the rows: left, then right neighbour
            near = a * v
            o[:, 1:] += near[:, :-1]
            o[:, 0] += near[:, 0]
            o[:, :-1] += near[:, 1:]
            o[:, -1] += near[:, -1]
        src, dst = dst, src
    return src


def colour_matrix(s):
    """3x3 matrix applying the video's saturation, white balance (tint) and exposure to row-vector RGB."""
    sat = s.saturation * np.eye(3) + (1 - s.saturation) / 3
    return (sat * (np.array(s.tint) * s.exposure)[None, :]).astype(np.float32)


@lru_cache(maxsize=4)
def noise_bank(h, w):
    """Fixed noise textures twice the frame size (fine grain, coarse blobs, sensor noise); crops vary per image."""
    rng = np.random.default_rng(20240601)

    def smooth(scale):
        small = rng.standard_normal((max(2 * h // scale, 2), max(2 * w // scale, 2))).astype(np.float32)
        return np.asarray(Image.fromarray(small).resize((2 * w, 2 * h), Image.BICUBIC)) / 1.2

    coarse = 0.6 * smooth(24) + 0.4 * smooth(8)
    return smooth(2), coarse, rng.standard_normal((2 * h, 2 * w, 3)).astype(np.float32) * 0.7


def noise_fields(h, w, rng):
    """Random crops of the noise bank for one image."""
    fine, coarse, sensor = noise_bank(h, w)
    oy, ox = rng.integers(0, h, 3), rng.integers(0, w, 3)
    return (fine[oy[0]:oy[0] + h, ox[0]:ox[0] + w], coarse[oy[1]:oy[1] + h, ox[1]:ox[1] + w],
            sensor[oy[2]:oy[2] + h, ox[2]:ox[2] + w])


@lru_cache(maxsize=4)
def vignette(h, w):
    """Lens vignetting: 1 at the centre, ~0.8 in the corners."""
    y, x = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
    return (1 - 0.1 * (x * x + y * y)).astype(np.float32)[..., None]


@lru_cache(maxsize=8)
def video_style(seed, video):
    """The (cached, read-only) style of one video."""
    return scene_style(np.random.default_rng([seed, video]))


def generate(index, seed=0, size=SIZE, frames=FRAMES_PER_VIDEO):
    """(name, RGB uint8 array, uint8 class mask) of image `index` of the synthetic data set."""
    w, h = size
    video, frame = divmod(int(index), frames)
    s = video_style(seed, video)
    rng = np.random.default_rng([seed, video, frame, 1])
    cam = Camera(w, h, s.cam_h, s.horizon + rng.normal(0, 0.01), s.xv + rng.normal(0, 0.01), s.curve)
    travel = frame * s.speed
    zx = rng.uniform(12, 60) if rng.random() < INTERSECTION_P[s.scene] else 0
    cv = Canvas(w, h)
    draw_sky(cv, cam, s)
    draw_skyline(cv, cam, s, rng)
    draw_ground(cv, cam, s, rng, zx)
    draw_roadside(cv, cam, s, rng, travel, zx)
    for _, draw in sorted(place_objects(cv, cam, s, rng, travel, zx), key=lambda o: -o[0]):
        draw()
    if s.hood:
        draw_hood(cv, cam, s)
    if s.time == "night":
        draw_night_light(cv, cam, s)
    rgb, mask = render(cv, cam, s, rng)
    return f"s{video:04d}-{frame:04d}", rgb, mask
