"""Colour coding of flow fields.

`flow_to_color` follows the Middlebury convention (Baker et al., "A Database
and Evaluation Methodology for Optical Flow"): the hue is the
direction of the displacement (right = red, down = yellow, left = cyan,
up = blue/violet), the saturation its length relative to `max_flow`: zero flow
is white, a flow of length `max_flow` the full colour, longer flows are the
full colour darkened to 75 %. Non-finite flows are black.
"""

from __future__ import annotations

import numpy as np

# Colour-wheel segments: (number of hues, start colour); each segment blends
# linearly from its start colour to the next segment's.
_WHEEL_SEGMENTS = (
    (15, (255, 0, 0)),      # red -> yellow
    (6, (255, 255, 0)),     # yellow -> green
    (4, (0, 255, 0)),       # green -> cyan
    (11, (0, 255, 255)),    # cyan -> blue
    (13, (0, 0, 255)),      # blue -> magenta
    (6, (255, 0, 255)),     # magenta -> red
)


def color_wheel() -> np.ndarray:
  """The 55 hues of the flow colour wheel, (55, 3) float64 in [0, 1]."""
  rows = []
  for i, (n, start) in enumerate(_WHEEL_SEGMENTS):
    end = _WHEEL_SEGMENTS[(i + 1) % len(_WHEEL_SEGMENTS)][1]
    t = np.arange(n, dtype=np.float64)[:, None] / n
    rows.append((1 - t) * np.array(start) + t * np.array(end))
  return np.clip(np.concatenate(rows) / 255.0, 0.0, 1.0)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None
                  ) -> np.ndarray:
  """Colour-codes a flow field (see the module docstring for the encoding).

  Args:
    flow: (H, W, 2) displacements (dx, dy) in pixels, e.g. `mapping_ab -
      pixel_grid`.
    max_flow: length drawn at full saturation; None = the largest finite
      length in `flow` (at least 1e-6).

  Returns:
    (H, W, 3) uint8 RGB.
  """
  flow = np.asarray(flow, np.float64)
  finite = np.all(np.isfinite(flow), axis=-1)
  u = np.where(finite, flow[..., 0], 0.0)
  v = np.where(finite, flow[..., 1], 0.0)
  radius = np.hypot(u, v)
  if max_flow is None:
    max_flow = float(radius.max()) if radius.size else 0.0
  radius = radius / max(max_flow, 1e-6)

  wheel = color_wheel()
  ncols = wheel.shape[0]
  # Angle in (-1, 1]; pointing left (dx < 0) sits half-way round the wheel.
  angle = np.arctan2(-v, -u) / np.pi
  pos = (angle + 1.0) / 2.0 * (ncols - 1)
  k0 = np.floor(pos).astype(np.int64)
  k1 = (k0 + 1) % ncols
  frac = (pos - k0)[..., None]
  hue = (1 - frac) * wheel[k0] + frac * wheel[k1]  # (H, W, 3)

  r = radius[..., None]
  color = np.where(r <= 1.0, 1.0 - r * (1.0 - hue), hue * 0.75)
  color = np.where(finite[..., None], color, 0.0)
  return np.round(np.clip(color, 0, 1) * 255).astype(np.uint8)
