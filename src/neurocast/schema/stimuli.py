"""Stimulus specs of the fly simulator (task: fly_simulation, fly_task): plain pydantic sections.

One section per stimulus family (its parameter ranges; one set of values is drawn per
segment) and :class:`StimulusSet`, a named mix of families. The renderers that turn these
specs into luminance live in :mod:`neurocast.sim.stimuli`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from neurocast.config import Section

Range = tuple[float, float]


def _check_range(v: Range) -> Range:
    lo, hi = v
    if lo > hi:
        raise ValueError(f"range [{lo}, {hi}] has its lower end above its upper end")
    return v


class FamilyParams(Section):
    @field_validator("*", mode="after")
    @classmethod
    def _ranges(cls, v, info):
        if isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            return _check_range(v)
        return v


class Flashes(FamilyParams):
    intensities: list[float] = Field([0.0, 1.0], description="flash luminances (grey between flashes)")
    flash_s: Range = (0.1, 1.0)
    interval_s: Range = (0.2, 1.0)
    baseline: float = Field(0.5, ge=0, le=1)


class MovingEdges(FamilyParams):
    angles_deg: list[float] = Field([float(a) for a in range(0, 360, 30)], description="motion directions")
    speed_deg_s: Range = Field((10.0, 150.0), description="log-uniform range")
    contrast: Range = (0.5, 1.0)
    polarities: list[Literal["on", "off"]] = ["on", "off"]


class MovingBars(FamilyParams):
    angles_deg: list[float] = Field([float(a) for a in range(0, 360, 30)])
    speed_deg_s: Range = (10.0, 150.0)
    width_deg: Range = (4.0, 20.0)
    contrast: Range = (0.5, 1.0)
    polarities: list[Literal["on", "off"]] = ["on", "off"]


class Gratings(FamilyParams):
    angles_deg: list[float] = Field([float(a) for a in range(0, 360, 30)])
    period_deg: Range = (10.0, 60.0)
    temporal_hz: Range = (0.5, 5.0)
    contrast: Range = (0.2, 1.0)
    waveforms: list[Literal["sine", "square"]] = ["sine", "square"]


class Looming(FamilyParams):
    l_over_v_s: Range = Field((0.01, 0.1), description="half-size over approach speed (s)")
    centre_fraction: float = Field(0.5, ge=0, le=1, description="centre drawn within this fraction of the field radius")
    max_radius_deg: float = Field(60.0, gt=0)
    polarities: list[Literal["dark", "bright"]] = ["dark", "bright"]


class Dots(FamilyParams):
    density: Range = Field((0.01, 0.05), description="fraction of columns starting a dot per step")
    duration_steps: tuple[int, int] = (1, 3)
    contrast: Range = (0.5, 1.0)


class WhiteNoise(FamilyParams):
    hold_steps: tuple[int, int] = (1, 5)
    contrast: Range = (0.2, 1.0)
    distribution: Literal["uniform", "gaussian"] = "uniform"


class Natural(FamilyParams):
    texture_px: int = Field(256, ge=32, le=2048, description="texture side in pixels (power of 2 is fastest)")
    texture_deg: float = Field(360.0, gt=0, description="visual angle the (periodic) texture spans")
    spectral_exponent: Range = Field((0.8, 1.3), description="amplitude ~ 1/f^exponent")
    blur_deg: float = Field(2.0, ge=0, description="Gaussian blur (photoreceptor acceptance)")
    speed_deg_s: Range = Field((5.0, 60.0), description="typical translation speed (std of the velocity)")
    flow_tau_s: float = Field(0.5, gt=0, description="correlation time of the velocity")
    rotation_deg_s: Range = (0.0, 30.0)
    saccade_hz: Range = (0.0, 1.0)
    saccade_deg: Range = (10.0, 60.0)
    contrast: Range = (0.3, 1.0)
    contrast_tau_s: float = Field(1.0, gt=0)
    mean_luminance: Range = (0.35, 0.65)
    objects: tuple[int, int] = Field((0, 0),
                                     description="textured discs moving on their own over the background (count range)")
    object_radius_deg: Range = Field((8.0, 25.0), description="radius of a moving object")
    object_speed_deg_s: Range = Field((10.0, 80.0), description="typical speed of an object (std of its velocity)")


class StimulusParams(Section):
    flashes: Flashes = Flashes()
    moving_edges: MovingEdges = MovingEdges()
    moving_bars: MovingBars = MovingBars()
    gratings: Gratings = Gratings()
    looming: Looming = Looming()
    dots: Dots = Dots()
    white_noise: WhiteNoise = WhiteNoise()
    natural: Natural = Natural()


FAMILY_NAMES = tuple(StimulusParams.model_fields)


class StimulusSet(Section):
    """A named mix of families: segment lengths and family choice drawn per segment."""

    families: dict[str, float] = Field({"natural": 1.0}, description="family -> weight")
    segment_s: Range = Field((1.0, 4.0), description="segment length range (seconds)")
    seed: int = 0
    params: StimulusParams = StimulusParams()

    @field_validator("families")
    @classmethod
    def _families(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("at least one stimulus family is needed")
        for name, w in v.items():
            if name not in FAMILY_NAMES:
                raise ValueError(f"unknown stimulus family {name!r}; families are {', '.join(FAMILY_NAMES)}")
            if not w > 0:
                raise ValueError(f"weight of family {name!r} must be > 0, got {w}")
        return v

    @model_validator(mode="after")
    def _segment(self):
        lo, hi = _check_range(self.segment_s)
        if lo <= 0:
            raise ValueError(f"segment_s must be positive, got {self.segment_s}")
        return self


#: families whose motion field is known exactly at every column (task-training on optic flow)
FLOW_FAMILIES = ("natural", "gratings")
