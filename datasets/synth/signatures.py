"""Class signatures of the synthetic benchmark: what each class looks and sounds like.

Every class ``c`` has

* a visual signature: a shape, a colour and a motion pattern, drawn on a neutral moving
  background;
* an audio signature: a timbre (pure tone, major chord, band-limited noise, or a rhythmic
  pulse train) at a class-specific frequency, mixed over low background noise.

Signatures are deterministic functions of the class index and the seed, built so that no two
classes share the same (shape, colour) or the same (timbre, frequency). Frequencies are spread
on a log scale between 220 and 3,500 Hz, well inside the VGGish band (125-7,500 Hz).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
MOTIONS = ("static", "horizontal", "vertical", "circular", "pulsing", "zigzag")
TIMBRES = ("tone", "chord", "noise_band", "pulses")


@dataclass(frozen=True)
class ClassSignature:
    """Visual and audio signature of one class (JSON-friendly)."""

    index: int
    name: str
    shape: str
    color_rgb: tuple[int, int, int]
    motion: str
    timbre: str
    freq_hz: float
    pulse_hz: float

    def to_dict(self) -> dict:
        return asdict(self)


def make_signatures(num_classes: int, seed: int) -> list[ClassSignature]:
    """``num_classes`` distinct signatures (at most 36 x 4 combinations are distinct)."""
    if not 1 <= num_classes <= 36:
        raise ValueError(f"num_classes must be in 1..36, got {num_classes}")
    rng = np.random.default_rng(seed + 7919)
    hues = (np.arange(num_classes) * 0.618034 + rng.uniform()) % 1.0  # golden-ratio spread
    freqs = np.geomspace(220.0, 3500.0, num_classes)
    freq_order = rng.permutation(num_classes)
    out = []
    for c in range(num_classes):
        shape = SHAPES[c % len(SHAPES)]
        motion = MOTIONS[(c // len(SHAPES) + c) % len(MOTIONS)]
        timbre = TIMBRES[(c + c // len(TIMBRES)) % len(TIMBRES)]
        r, g, b = colorsys.hsv_to_rgb(float(hues[c]), 0.85, 0.95)
        color = (int(r * 255), int(g * 255), int(b * 255))
        freq = float(round(freqs[freq_order[c]], 1))
        pulse = float(round(2.0 + (c % 5) * 1.5, 2))
        name = f"{color_name(hues[c])} {shape} {timbre.replace('_', ' ')}"
        out.append(ClassSignature(c, name, shape, color, motion, timbre, freq, pulse))
    return out


def color_name(hue: float) -> str:
    names = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta", "pink")
    return names[int(hue * len(names)) % len(names)]


# ---------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------
def render_sound(
    sig: ClassSignature, num_samples: int, sample_rate: int, rng: np.random.Generator, phase_s: float = 0.0
) -> np.ndarray:
    """The class's sound for ``num_samples`` samples (unit-ish amplitude, float32)."""
    t = phase_s + np.arange(num_samples) / sample_rate
    f = sig.freq_hz
    if sig.timbre == "tone":
        x = np.sin(2 * np.pi * f * t)
    elif sig.timbre == "chord":
        x = (np.sin(2 * np.pi * f * t) + np.sin(2 * np.pi * f * 1.25 * t) + np.sin(2 * np.pi * f * 1.5 * t)) / 2.0
    elif sig.timbre == "noise_band":
        noise = rng.standard_normal(num_samples + 1)
        spec = np.fft.rfft(noise)
        freqs = np.fft.rfftfreq(num_samples + 1, 1.0 / sample_rate)
        spec[np.abs(freqs - f) > 0.15 * f] = 0.0
        x = np.fft.irfft(spec, num_samples + 1)[:num_samples]
        x = x / (np.abs(x).max() + 1e-9)
    elif sig.timbre == "pulses":
        gate = (np.sin(2 * np.pi * sig.pulse_hz * t) > 0.0).astype(np.float64)
        x = np.sin(2 * np.pi * f * t) * gate
    else:
        raise ValueError(f"unknown timbre {sig.timbre!r}")
    return x.astype(np.float32)


def fade(n: int, sample_rate: int, fade_s: float = 0.01) -> np.ndarray:
    """Raised-cosine fade in/out envelope, so onsets do not click."""
    k = max(1, min(n // 2, int(fade_s * sample_rate)))
    env = np.ones(n, np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, k))
    env[:k] = ramp
    env[n - k :] = ramp[::-1]
    return env


# ---------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------
def shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean H x W mask of ``shape`` centred at (cx, cy) with radius ``r`` pixels."""
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "cross":
        w = r * 0.3
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    raise ValueError(f"unknown shape {shape!r}")


def motion_offset(motion: str, t_s: float, amplitude: float) -> tuple[float, float, float]:
    """(dx, dy, scale) of an object at time ``t_s`` (seconds since it appeared)."""
    w = 2 * math.pi * 0.5
    if motion == "static":
        return 0.0, 0.0, 1.0
    if motion == "horizontal":
        return amplitude * math.sin(w * t_s), 0.0, 1.0
    if motion == "vertical":
        return 0.0, amplitude * math.sin(w * t_s), 1.0
    if motion == "circular":
        return amplitude * math.cos(w * t_s), amplitude * math.sin(w * t_s), 1.0
    if motion == "pulsing":
        return 0.0, 0.0, 1.0 + 0.35 * math.sin(2 * w * t_s)
    if motion == "zigzag":
        phase = (t_s * 0.8) % 1.0
        tri = 4 * abs(phase - 0.5) - 1
        return amplitude * tri, amplitude * 0.5 * math.sin(3 * w * t_s), 1.0
    raise ValueError(f"unknown motion {motion!r}")
