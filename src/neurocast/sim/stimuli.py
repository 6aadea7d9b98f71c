"""Procedural, seeded visual stimuli rendered directly at each column of the hex lattice.

Every stimulus is a luminance in [0, 1] (grey = 0.5) per column and time step; no
high-resolution frames are rendered. Positions are in degrees of visual angle, with
``deg_per_column`` (5.8 by default, the fly's inter-ommatidial angle) between columns.

Families (each a renderer + its parameter ranges, specified in :mod:`neurocast.schema.stimuli`;
one set of values is drawn per segment):

* ``flashes``       full-field ON/OFF flashes from grey
* ``moving_edges``  ON or OFF edges sweeping across the field (angle, speed)
* ``moving_bars``   bright or dark bars on grey (width, angle, speed)
* ``gratings``      drifting sine or square gratings (period, temporal frequency, angle, contrast)
* ``looming``       discs expanding towards collision (size-to-speed ratio l/v, centre, polarity)
* ``dots``          sparse single-column impulses on grey
* ``white_noise``   independent luminance per column, held for a few steps
* ``natural``       1/f ("pink") noise textures seen through smooth random self-motion:
                    translation with a smoothly varying velocity, rotation, saccade-like
                    jumps and slow contrast / mean-luminance changes

A :class:`StimulusStream` composes families into an endless sequence of segments with
random lengths, drawing the family of each segment by weight; it is seeded, and reading
it block by block gives exactly the same values as reading it at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from neurocast.errors import ConfigError
from neurocast.schema.stimuli import (
    FAMILY_NAMES,
    FLOW_FAMILIES,
    Dots,
    Flashes,
    Gratings,
    Looming,
    MovingBars,
    MovingEdges,
    Natural,
    Range,
    StimulusParams,
    StimulusSet,
    WhiteNoise,
)

# ---------------------------------------------------------------------------- helpers


def _uniform(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _loguniform(rng: np.random.Generator, r: Range) -> float:
    if r[0] <= 0:
        return _uniform(rng, r)
    return float(np.exp(rng.uniform(np.log(r[0]), np.log(r[1])))) if r[1] > r[0] else float(r[0])


def _soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """0 -> 1 ramp of the given width centred at 0 (anti-aliased edge)."""
    return np.clip(0.5 + x / max(width, 1e-9), 0.0, 1.0)


def _direction(angle_deg: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a)])


# ---------------------------------------------------------------------------- renderers
# Each renderer: (params, rng, n_steps, dt, xy_deg (C, 2)) -> (n_steps, C) float32 in [0, 1].


def render_flashes(p: Flashes, rng, n, dt, xy):
    out = np.empty(n, dtype=np.float32)
    t = 0
    while t < n:
        k = max(1, int(round(_uniform(rng, p.interval_s) / dt)))
        out[t : t + k] = p.baseline
        t += k
        k = max(1, int(round(_uniform(rng, p.flash_s) / dt)))
        out[t : t + k] = float(rng.choice(p.intensities))
        t += k
    return np.repeat(out[:, None], xy.shape[0], axis=1)


def _sweep_extent(xy, direction):
    proj = xy @ direction
    return proj, float(proj.min()), float(proj.max())


def render_moving_edges(p: MovingEdges, rng, n, dt, xy):
    d = _direction(float(rng.choice(p.angles_deg)))
    speed = _loguniform(rng, p.speed_deg_s)
    c = _uniform(rng, p.contrast)
    on = rng.choice(p.polarities) == "on"
    proj, lo, hi = _sweep_extent(xy, d)
    front = lo - 5.0 + speed * dt * np.arange(n)[:, None]  # starts just outside the field
    behind = _soft_step(front - proj[None, :], 5.8)  # 1 where the edge has passed
    after, before = (0.5 + c / 2, 0.5 - c / 2) if on else (0.5 - c / 2, 0.5 + c / 2)
    return (before + (after - before) * behind).astype(np.float32)


def render_moving_bars(p: MovingBars, rng, n, dt, xy):
    d = _direction(float(rng.choice(p.angles_deg)))
    speed = _loguniform(rng, p.speed_deg_s)
    width = _uniform(rng, p.width_deg)
    c = _uniform(rng, p.contrast)
    lum = 0.5 + c / 2 if rng.choice(p.polarities) == "on" else 0.5 - c / 2
    proj, lo, hi = _sweep_extent(xy, d)
    centre = lo - width + speed * dt * np.arange(n)[:, None]
    dist = np.abs(proj[None, :] - centre)
    inside = _soft_step(width / 2 - dist, 5.8)
    return (0.5 + (lum - 0.5) * inside).astype(np.float32)


def gratings_with_flow(p: Gratings, rng, n, dt, xy):
    """One ``gratings`` segment and its motion field: every column moves at period x frequency
    along the drift direction (deg/s). Returns luminance (n, C), flow (n, C, 2), valid (n,)."""
    d = _direction(float(rng.choice(p.angles_deg)))
    period = _loguniform(rng, p.period_deg)
    freq = _loguniform(rng, p.temporal_hz)
    c = _uniform(rng, p.contrast)
    phase0 = rng.uniform(0, 2 * np.pi)
    phase = 2 * np.pi * ((xy @ d)[None, :] / period - freq * dt * np.arange(n)[:, None]) + phase0
    wave = np.sin(phase)
    if rng.choice(p.waveforms) == "square":
        wave = np.sign(wave)
    flow = np.broadcast_to((d * period * freq).astype(np.float32), (n, xy.shape[0], 2)).copy()
    return (0.5 + c / 2 * wave).astype(np.float32), flow, np.ones(n, dtype=bool)


def render_gratings(p: Gratings, rng, n, dt, xy):
    return gratings_with_flow(p, rng, n, dt, xy)[0]


def render_looming(p: Looming, rng, n, dt, xy):
    field = float(np.max(np.linalg.norm(xy, axis=1))) or 1.0
    r0 = field * p.centre_fraction * np.sqrt(rng.uniform())
    a = rng.uniform(0, 2 * np.pi)
    centre = r0 * np.array([np.cos(a), np.sin(a)])
    lv = _loguniform(rng, p.l_over_v_s)
    t = dt * np.arange(n)
    t_coll = t[-1] + dt  # collision at the end of the segment
    radius = np.degrees(np.arctan(lv / np.maximum(t_coll - t, 1e-6)))
    radius = np.minimum(radius, p.max_radius_deg)
    dist = np.linalg.norm(xy - centre, axis=1)
    inside = _soft_step(radius[:, None] - dist[None, :], 5.8)
    dark = rng.choice(p.polarities) == "dark"
    bg, disc = (1.0, 0.0) if dark else (0.0, 1.0)
    return (bg + (disc - bg) * inside).astype(np.float32)


def render_dots(p: Dots, rng, n, dt, xy):
    C = xy.shape[0]
    density = _uniform(rng, p.density)
    out = np.full((n, C), 0.5, dtype=np.float32)
    starts = rng.random((n, C)) < density
    for t, col in zip(*np.nonzero(starts)):
        k = int(rng.integers(p.duration_steps[0], p.duration_steps[1] + 1))
        c = _uniform(rng, p.contrast)
        out[t : t + k, col] = 0.5 + c / 2 * rng.choice([-1.0, 1.0])
    return out


def render_white_noise(p: WhiteNoise, rng, n, dt, xy):
    C = xy.shape[0]
    hold = int(rng.integers(p.hold_steps[0], p.hold_steps[1] + 1))
    c = _uniform(rng, p.contrast)
    m = -(-n // hold)
    if p.distribution == "uniform":
        vals = rng.uniform(-1, 1, size=(m, C))
    else:
        vals = np.clip(rng.normal(0, 0.5, size=(m, C)), -1, 1)
    return (0.5 + c / 2 * np.repeat(vals, hold, axis=0)[:n]).astype(np.float32)


def pink_texture(rng, size: int, exponent: float, blur_px: float) -> np.ndarray:
    """A periodic (size, size) 1/f^exponent noise texture, zero mean, unit std."""
    f = np.fft.fftfreq(size)
    fx, fy = np.meshgrid(f, f, indexing="ij")
    fr = np.sqrt(fx**2 + fy**2)
    fr[0, 0] = 1.0
    amp = fr ** (-exponent)
    if blur_px > 0:
        amp *= np.exp(-2 * (np.pi * fr * blur_px) ** 2)
    amp[0, 0] = 0.0
    spec = amp * np.exp(2j * np.pi * rng.random((size, size)))
    tex = np.fft.ifft2(spec).real
    tex -= tex.mean()
    std = tex.std()
    return tex / std if std > 0 else tex


def _ou(rng, n, dt, tau, std, dims=1):
    """Ornstein-Uhlenbeck process (n, dims) with stationary std, started from its stationary law."""
    a = np.exp(-dt / tau)
    b = std * np.sqrt(1 - a * a)
    x = np.empty((n, dims))
    x[0] = rng.normal(0, std, dims)
    noise = rng.normal(0, 1, (n, dims)) * b
    for t in range(1, n):
        x[t] = a * x[t - 1] + noise[t]
    return x


def natural_with_flow(p: Natural, rng, n, dt, xy):
    """One ``natural`` segment and its exact motion field.

    Column ``xy`` sees texture point ``R(theta) xy + pos`` (rotation theta, translation pos, both
    in degrees), so a texture feature moves on the eye at ``-omega J xy - R(-theta) v`` (v =
    dpos/dt, omega = dtheta/dt in rad/s, J the 90-degree rotation). With ``objects``, textured
    discs move over that background with their own velocities (the flow where they are visible;
    at their soft rims luminance and flow are blends). Returns luminance (n, C),
    flow (n, C, 2) in degrees per second, and a (n,) mask that is False on frames whose motion
    is not a flow (a saccade-like jump happens between frame t and t + 1).
    """
    from scipy.ndimage import map_coordinates

    px_per_deg = p.texture_px / p.texture_deg
    tex = pink_texture(rng, p.texture_px, _uniform(rng, p.spectral_exponent), p.blur_deg * px_per_deg)
    speed = _uniform(rng, p.speed_deg_s)
    vel = _ou(rng, n, dt, p.flow_tau_s, speed, 2)
    pos = np.cumsum(vel * dt, axis=0) + rng.uniform(0, p.texture_deg, 2)
    sac_rate = _uniform(rng, p.saccade_hz)
    jumps = rng.random(n) < sac_rate * dt
    if jumps.any():
        amp = np.array([_uniform(rng, p.saccade_deg) for _ in range(int(jumps.sum()))])
        ang = rng.uniform(0, 2 * np.pi, int(jumps.sum()))
        step = np.zeros((n, 2))
        step[jumps] = amp[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        pos += np.cumsum(step, axis=0)
    omega = _ou(rng, n, dt, p.flow_tau_s, _uniform(rng, p.rotation_deg_s), 1)[:, 0]
    theta = np.deg2rad(np.cumsum(omega * dt) + rng.uniform(0, 360))
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x = cos * xy[None, :, 0] - sin * xy[None, :, 1] + pos[:, :1]
    y = sin * xy[None, :, 0] + cos * xy[None, :, 1] + pos[:, 1:]
    vals = map_coordinates(tex, [x.ravel() * px_per_deg, y.ravel() * px_per_deg], order=1, mode="grid-wrap")
    vals = vals.reshape(n, -1)
    log_c = np.log(_uniform(rng, p.contrast)) + _ou(rng, n, dt, p.contrast_tau_s, 0.3, 1)
    contrast = np.clip(np.exp(log_c), 0.05, 1.0)
    mean = _uniform(rng, p.mean_luminance)
    lum = np.clip(mean + contrast * vals / 4.0, 0.0, 1.0).astype(np.float32)
    # motion between frame t and t + 1 (pos and theta advance by vel[t+1] dt, omega[t+1] dt)
    v_next = np.concatenate([vel[1:], vel[-1:]], axis=0)
    w_next = np.deg2rad(np.concatenate([omega[1:], omega[-1:]]))
    c, s = np.cos(theta), np.sin(theta)
    # R(-theta) v
    rv = np.stack([c * v_next[:, 0] + s * v_next[:, 1], -s * v_next[:, 0] + c * v_next[:, 1]], axis=1)
    jxy = np.stack([-xy[:, 1], xy[:, 0]], axis=1)  # J xy
    flow = -w_next[:, None, None] * jxy[None] - rv[:, None, :]
    valid = ~np.concatenate([jumps[1:], [False]])
    lo, hi = p.objects
    n_obj = int(rng.integers(lo, hi + 1)) if hi > 0 else 0
    if n_obj:  # drawn after everything above, so object-free segments are unchanged
        field = float(np.max(np.linalg.norm(xy, axis=1))) if len(xy) else 0.0
        lum, flow = _add_objects(p, rng, n_obj, n, dt, xy, field, px_per_deg, lum, flow, contrast, mean)
    return lum, flow.astype(np.float32), valid


def _add_objects(p: Natural, rng, n_obj, n, dt, xy, field, px_per_deg, lum, flow, contrast, mean):
    """Textured discs, each translating with its own smooth random velocity (wrapping around a box
    slightly larger than the field), drawn over the background in order: where an object is
    visible, the luminance is its texture and the flow its velocity."""
    from scipy.ndimage import map_coordinates

    lum = lum.astype(np.float64)
    flow = flow.astype(np.float64)
    for _ in range(n_obj):
        radius = _uniform(rng, p.object_radius_deg)
        tex = pink_texture(rng, p.texture_px, _uniform(rng, p.spectral_exponent), p.blur_deg * px_per_deg)
        vel = _ou(rng, n, dt, p.flow_tau_s, _uniform(rng, p.object_speed_deg_s), 2)
        box = field + radius
        start = rng.uniform(-box, box, 2)
        centre = (start + np.cumsum(vel * dt, axis=0) + box) % (2 * box) - box   # (n, 2)
        offset = rng.uniform(0, p.texture_deg, 2)
        rel = xy[None, :, :] - centre[:, None, :]                               # (n, C, 2)
        inside = np.clip(0.5 + (radius - np.linalg.norm(rel, axis=2)) / 2.0, 0.0, 1.0)
        coords = (rel + offset) * px_per_deg
        vals = map_coordinates(tex, [coords[..., 0].ravel(), coords[..., 1].ravel()], order=1,
                               mode="grid-wrap").reshape(n, -1)
        obj = np.clip(mean + contrast * vals / 4.0, 0.0, 1.0)
        v_next = np.concatenate([vel[1:], vel[-1:]], axis=0)
        lum = lum + inside * (obj - lum)
        flow = flow + inside[..., None] * (v_next[:, None, :] - flow)
    return lum.astype(np.float32), flow


def render_natural(p: Natural, rng, n, dt, xy):
    return natural_with_flow(p, rng, n, dt, xy)[0]


#: families whose exact motion field is known: family -> (params, rng, n, dt, xy) -> (luminance, flow, valid)
WITH_FLOW: dict[str, Callable] = {"natural": natural_with_flow, "gratings": gratings_with_flow}
assert tuple(WITH_FLOW) == FLOW_FAMILIES

RENDERERS: dict[str, Callable] = {
    "flashes": render_flashes,
    "moving_edges": render_moving_edges,
    "moving_bars": render_moving_bars,
    "gratings": render_gratings,
    "looming": render_looming,
    "dots": render_dots,
    "white_noise": render_white_noise,
    "natural": render_natural,
}
assert set(RENDERERS) == set(FAMILY_NAMES)


def render(family: str, params: StimulusParams, rng: np.random.Generator, n_steps: int, dt: float,
           xy_deg: np.ndarray) -> np.ndarray:
    """One segment of ``family`` as (n_steps, C) luminance."""
    if family not in RENDERERS:
        raise ConfigError(f"unknown stimulus family {family!r}; families are {', '.join(FAMILY_NAMES)}")
    out = RENDERERS[family](getattr(params, family), rng, int(n_steps), float(dt), np.asarray(xy_deg, np.float64))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


class StimulusStream:
    """Endless seeded sequence of segments; ``read(n)`` returns the next n frames (n, C).

    ``stream`` distinguishes parallel sequences drawn from the same set (sequence b of a
    batch uses stream b). Segment boundaries are recorded in ``segments`` as
    (start frame, family) pairs.
    """

    def __init__(self, spec: StimulusSet, xy_deg: np.ndarray, dt: float, stream: int = 0):
        self.spec = spec
        self.xy = np.asarray(xy_deg, np.float64)
        self.dt = float(dt)
        self.rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), int(stream)]))
        names = list(spec.families)
        w = np.array([spec.families[k] for k in names], dtype=np.float64)
        self.names, self.weights = names, w / w.sum()
        self.buffer = np.zeros((0, self.xy.shape[0]), np.float32)
        self.position = 0
        self.segments: list[tuple[int, str]] = []

    def _next_segment(self) -> None:
        family = self.names[int(self.rng.choice(len(self.names), p=self.weights))]
        n = max(1, int(round(_uniform(self.rng, self.spec.segment_s) / self.dt)))
        self.segments.append((self.position + self.buffer.shape[0], family))
        seg = render(family, self.spec.params, self.rng, n, self.dt, self.xy)
        self.buffer = np.concatenate([self.buffer, seg], axis=0)

    def read(self, n: int) -> np.ndarray:
        while self.buffer.shape[0] < n:
            self._next_segment()
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        self.position += n
        return out
