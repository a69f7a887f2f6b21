"""The NumPy renderer: a picture of an identity from an ImageSpec under a camera's style.

Shapes are signed distance functions, painted with anti-aliasing inside their bounding boxes.
"""
import dataclasses
import io
from collections.abc import Sequence

import numpy as np
import PIL.Image

from axm_jax.data.synthetic.identities import (COLOURS, HAIR_PALETTE, NONE, PALETTE, SKIN_TONES, Identity,
                                               ImageSpec, choice, sample_identity)

IMAGE_HEIGHT = 256
IMAGE_WIDTH = 128


@dataclasses.dataclass(frozen=True)
class _Shape:
  """A region given by a signed distance function, evaluated only inside its bounding box."""
  top: float
  bottom: float
  left: float
  right: float
  distance: object  # (ys, xs) -> (signed distance in pixels, shading coordinate in [0, 1])


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> _Shape:
  def distance(ys, xs):
    q = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
    return (q - 1.0) * min(ry, rx), np.abs(xs - cx) / rx
  return _Shape(cy - ry, cy + ry, cx - rx, cx + rx, distance)


def _capsule(y0: float, x0: float, y1: float, x1: float, radius: float) -> _Shape:
  """A segment thickened to `radius` (limbs, straps)."""
  dy, dx = y1 - y0, x1 - x0
  length_sq = max(dy * dy + dx * dx, 1e-6)

  def distance(ys, xs):
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / length_sq, 0.0, 1.0)
    d = np.sqrt((ys - y0 - t * dy) ** 2 + (xs - x0 - t * dx) ** 2)
    return d - radius, d / radius
  return _Shape(min(y0, y1) - radius, max(y0, y1) + radius, min(x0, x1) - radius, max(x0, x1) + radius, distance)


def _polygon(points: Sequence[tuple[float, float]]) -> _Shape:
  """A convex polygon from (y, x) corners."""
  corners = np.asarray(points, np.float32)
  centre = corners.mean(axis=0)
  edges = []
  for start, end in zip(corners, np.roll(corners, -1, axis=0)):
    normal = np.array([end[1] - start[1], -(end[0] - start[0])])
    normal /= max(np.linalg.norm(normal), 1e-6)
    if normal @ (centre - start) > 0:
      normal = -normal
    edges.append((start, normal))
  top, left = corners.min(axis=0)
  bottom, right = corners.max(axis=0)
  half_width = max((right - left) / 2, 1.0)
  middle = (left + right) / 2

  def distance(ys, xs):
    d = np.max(np.stack([(ys - start[0]) * normal[0] + (xs - start[1]) * normal[1] for start, normal in edges]),
               axis=0)
    return d, np.abs(xs - middle) / half_width
  return _Shape(top, bottom, left, right, distance)


def _box(top: float, bottom: float, left: float, right: float) -> _Shape:
  return _polygon([(top, left), (top, right), (bottom, right), (bottom, left)])


def _scaled(colour, factor: float) -> np.ndarray:
  return np.clip(np.asarray(colour, np.float32) * factor, 0, 255)


def _contrast_colour(colour) -> np.ndarray:
  luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
  return np.array((40, 40, 52) if luminance > 140 else (236, 236, 230), np.float32)


class _Canvas:
  """A float RGB image that shapes are painted onto."""

  def __init__(self, pixels: np.ndarray):
    self.pixels = pixels
    self.height, self.width = pixels.shape[:2]

  def paint(self, shape: _Shape, colour, shading: float = 0.3, texture=None, clip=None) -> None:
    """Blends `colour` (or `texture(ys, xs) -> [h, w, 3]`) into the shape; `clip(ys, xs)` masks it."""
    y0, y1 = max(int(shape.top) - 1, 0), min(int(np.ceil(shape.bottom)) + 2, self.height)
    x0, x1 = max(int(shape.left) - 1, 0), min(int(np.ceil(shape.right)) + 2, self.width)
    if y0 >= y1 or x0 >= x1:
      return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    signed_distance, shade_coordinate = shape.distance(ys, xs)
    alpha = np.clip(0.5 - signed_distance, 0.0, 1.0)
    if clip is not None:
      alpha = alpha * clip(ys, xs)
    fill = texture(ys, xs) if texture is not None else np.asarray(colour, np.float32)
    fill = fill * (1.0 - shading * np.clip(shade_coordinate, 0.0, 1.0) ** 2)[..., None]
    window = self.pixels[y0:y1, x0:x1]
    window += alpha[..., None] * (fill - window)


def _stripes(colour, y_origin: float, period: float):
  base = np.asarray(colour, np.float32)
  stripe = _contrast_colour(colour)

  def texture(ys, xs):
    on = (((ys - y_origin) % period) < period * 0.45) & (xs >= 0)
    return np.where(on[..., None], stripe, base)
  return texture


def _denim(colour):
  base = np.asarray(colour, np.float32)

  def texture(ys, xs):
    twill = 0.07 * np.sin((xs + ys) * 1.9) + 0.05 * np.sin(xs * 12.9898 + ys * 78.233) * np.cos(ys * 3.1)
    return base * (1.0 + twill)[..., None] + 14.0
  return texture


def _ribs(colour, x_origin: float):
  base = _scaled(colour, 0.78)

  def texture(ys, xs):
    dark = (((xs - x_origin) % 3.0) < 1.2) & (ys >= 0)
    return np.where(dark[..., None], base * 0.8, base)
  return texture


@dataclasses.dataclass(frozen=True)
class _Body:
  """Where the person stands: top of the head, height in pixels, centre x, and the side the person faces."""
  top: float
  height: float
  centre: float
  facing: int  # +1 walks right, -1 walks left, 0 front or back view

  def y(self, fraction: float) -> float:
    return self.top + fraction * self.height

  def size(self, fraction: float) -> float:
    return fraction * self.height


@dataclasses.dataclass(frozen=True)
class _Pose:
  """Joint positions (y, x) of the visible limbs; for side views index 0 is the near limb."""
  shoulders: tuple
  elbows: tuple
  wrists: tuple
  hips: tuple
  knees: tuple
  ankles: tuple


def _front_pose(body: _Body, shoulder_half_width: float, rng: np.random.Generator) -> _Pose:
  cx, size = body.centre, body.size
  shoulders, elbows, wrists, hips, knees, ankles = [], [], [], [], [], []
  for side in (-1, 1):
    upper_angle = np.radians(rng.uniform(3, 14))
    lower_angle = upper_angle + np.radians(rng.uniform(-6, 8))
    shoulder = (body.y(0.19), cx + side * (shoulder_half_width - size(0.02)))
    elbow = (shoulder[0] + size(0.15) * np.cos(upper_angle), shoulder[1] + side * size(0.15) * np.sin(upper_angle))
    wrist = (elbow[0] + size(0.14) * np.cos(lower_angle), elbow[1] + side * size(0.14) * np.sin(lower_angle))
    hip = (body.y(0.52), cx + side * size(0.045))
    ankle = (body.y(0.955), cx + side * (size(0.05) + rng.uniform(-0.01, 0.03) * body.height))
    shoulders.append(shoulder)
    elbows.append(elbow)
    wrists.append(wrist)
    hips.append(hip)
    knees.append(((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2))
    ankles.append(ankle)
  return _Pose(tuple(shoulders), tuple(elbows), tuple(wrists), tuple(hips), tuple(knees), tuple(ankles))


def _side_pose(body: _Body, rng: np.random.Generator) -> _Pose:
  cx, size, facing = body.centre, body.size, body.facing
  stride = np.radians(rng.uniform(6, 24))
  swing = np.radians(rng.uniform(5, 28))
  shoulders, elbows, wrists, hips, knees, ankles = [], [], [], [], [], []
  for direction in (1, -1):  # near leg forward with near arm back, and the reverse for the far limbs
    shoulder = (body.y(0.19), cx)
    arm_angle = -direction * swing
    elbow = (shoulder[0] + size(0.15) * np.cos(arm_angle), shoulder[1] + facing * size(0.15) * np.sin(arm_angle))
    wrist = (elbow[0] + size(0.14) * np.cos(arm_angle * 1.4),
             elbow[1] + facing * size(0.14) * np.sin(arm_angle * 1.4 + np.radians(10)))
    hip = (body.y(0.52), cx)
    leg_angle = direction * stride
    ankle = (hip[0] + size(0.435) * np.cos(leg_angle), hip[1] + facing * size(0.435) * np.sin(leg_angle))
    knee = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2 + facing * size(0.012))
    shoulders.append(shoulder)
    elbows.append(elbow)
    wrists.append(wrist)
    hips.append(hip)
    knees.append(knee)
    ankles.append(ankle)
  return _Pose(tuple(shoulders), tuple(elbows), tuple(wrists), tuple(hips), tuple(knees), tuple(ankles))


class _PersonPainter:
  """Paints one identity from one viewpoint onto a canvas, back to front."""

  def __init__(self, canvas: _Canvas, identity: Identity, viewpoint: str, body: _Body, rng: np.random.Generator):
    self.canvas = canvas
    self.identity = identity
    self.viewpoint = viewpoint
    self.body = body
    self.side_view = viewpoint in ('left', 'right')
    woman = identity.presentation == 'woman'
    if self.side_view:
      self.shoulder_half_width, self.hip_half_width = body.size(0.07), body.size(0.072)
      self.pose = _side_pose(body, rng)
    else:
      self.shoulder_half_width = body.size(0.1 if woman else 0.122) * rng.uniform(0.95, 1.05)
      self.hip_half_width = body.size(0.094 if woman else 0.082)
      self.pose = _front_pose(body, self.shoulder_half_width, rng)
    self.skin = np.asarray(SKIN_TONES[identity.skin_tone], np.float32)
    self.upper_colour = np.asarray(PALETTE[identity.upper_colour], np.float32)
    self.upper_texture = (_stripes(self.upper_colour, body.y(0.17), body.size(0.055))
                          if identity.pattern == 'striped' else None)

  # -- helpers ---------------------------------------------------------------------------------------------------
  def _garment(self, shape: _Shape, shading: float = 0.3) -> None:
    self.canvas.paint(shape, self.upper_colour, shading=shading, texture=self.upper_texture)

  def _bag_side_sign(self) -> int:
    """Image x direction of the bag side in front/back views (the person's right is image-left from the front)."""
    right = -1 if self.viewpoint == 'front' else 1
    return right if self.identity.bag_side == 'right' else -right

  def _bag_near(self) -> bool:
    return self.identity.bag_side == ('right' if self.viewpoint == 'right' else 'left')

  # -- parts -----------------------------------------------------------------------------------------------------
  def _leg(self, index: int, shade: float) -> None:
    pose, size, identity = self.pose, self.body.size, self.identity
    hip, knee, ankle = pose.hips[index], pose.knees[index], pose.ankles[index]
    self.canvas.paint(_capsule(*hip, *knee, size(0.046)), _scaled(self.skin, shade))
    self.canvas.paint(_capsule(*knee, *ankle, size(0.034)), _scaled(self.skin, shade))
    lower = identity.lower
    if lower in ('trousers', 'jeans', 'shorts'):
      colour = _scaled(PALETTE[identity.lower_colour], shade)
      texture = _denim(colour) if lower == 'jeans' else None
      if lower == 'shorts':
        hem = (hip[0] + (knee[0] - hip[0]) * 0.75, hip[1] + (knee[1] - hip[1]) * 0.75)
        self.canvas.paint(_capsule(*hip, *hem, size(0.054)), colour)
      else:
        cuff = (ankle[0] - size(0.012), ankle[1])
        self.canvas.paint(_capsule(*knee, *cuff, size(0.042)), colour, texture=texture)
        self.canvas.paint(_capsule(*hip, *knee, size(0.052)), colour, texture=texture)
      if lower == 'jeans' and not self.side_view:
        outer = 1 if ankle[1] > self.body.centre else -1
        seam = _capsule(hip[0], hip[1] + outer * size(0.035), ankle[0] - size(0.02), ankle[1] + outer * size(0.03),
                        size(0.005))
        self.canvas.paint(seam, colour * 0.5 + 120.0, shading=0.0)
    shoe_colour = _scaled(PALETTE[identity.shoes_colour], shade)
    if self.side_view:
      shoe = _ellipse(ankle[0] + size(0.012), ankle[1] + self.body.facing * size(0.025), size(0.024), size(0.048))
    else:
      shoe = _ellipse(ankle[0] + size(0.012), ankle[1], size(0.026), size(0.038))
    self.canvas.paint(shoe, shoe_colour, shading=0.4)

  def _pelvis_and_skirt(self) -> None:
    body, size, identity = self.body, self.body.size, self.identity
    cx, hip_half_width = body.centre, self.hip_half_width
    if identity.lower in ('trousers', 'jeans', 'shorts'):
      colour = np.asarray(PALETTE[identity.lower_colour], np.float32)
      texture = _denim(colour) if identity.lower == 'jeans' else None
      self.canvas.paint(_box(body.y(0.46), body.y(0.57), cx - hip_half_width - size(0.005),
                             cx + hip_half_width + size(0.005)), colour, texture=texture)
      if identity.lower == 'trousers':
        self.canvas.paint(_box(body.y(0.46), body.y(0.48), cx - hip_half_width, cx + hip_half_width),
                          _scaled(colour, 0.45), shading=0.1)
    elif identity.lower == 'skirt':
      flare = 1.45 if not self.side_view else 1.6
      self.canvas.paint(_polygon([(body.y(0.46), cx - hip_half_width), (body.y(0.46), cx + hip_half_width),
                                  (body.y(0.69), cx + hip_half_width * flare),
                                  (body.y(0.69), cx - hip_half_width * flare)]),
                        PALETTE[identity.lower_colour], shading=0.25)

  def _torso(self) -> None:
    body, size, identity = self.body, self.body.size, self.identity
    cx, shoulder, hip = body.centre, self.shoulder_half_width, self.hip_half_width
    upper = identity.upper
    hem = {'t-shirt': 0.5, 'dress': 0.47, 'coat': 0.47}.get(upper, 0.52)
    if upper in ('dress', 'coat'):
      flare = (1.6 if upper == 'dress' else 1.3) * (1.1 if self.side_view else 1.0)
      length = 0.70 if upper == 'dress' else 0.75
      self._garment(_polygon([(body.y(0.44), cx - hip), (body.y(0.44), cx + hip),
                              (body.y(length), cx + hip * flare), (body.y(length), cx - hip * flare)]), 0.25)
    if identity.presentation == 'woman' and not self.side_view:  # a waist: two trapezoids meeting at y(0.36)
      waist = hip * 0.82
      self._garment(_polygon([(body.y(0.165), cx - shoulder), (body.y(0.165), cx + shoulder),
                              (body.y(0.365), cx + waist), (body.y(0.365), cx - waist)]))
      self._garment(_polygon([(body.y(0.355), cx - waist), (body.y(0.355), cx + waist),
                              (body.y(hem), cx + hip + size(0.006)), (body.y(hem), cx - hip - size(0.006))]))
    else:
      self._garment(_polygon([(body.y(0.165), cx - shoulder), (body.y(0.165), cx + shoulder),
                              (body.y(hem), cx + hip + size(0.006)), (body.y(hem), cx - hip - size(0.006))]))
    self._garment(_capsule(body.y(0.185), cx - shoulder + size(0.02), body.y(0.185), cx + shoulder - size(0.02),
                           size(0.022)), 0.1)
    darker = _scaled(self.upper_colour, 0.72)
    lighter = np.clip(self.upper_colour * 0.75 + 70.0, 0, 255)
    front = self.viewpoint == 'front'
    if upper == 'coat':
      self.canvas.paint(_box(body.y(0.445), body.y(0.475), cx - hip - size(0.01), cx + hip + size(0.01)), darker)
      if front:
        self.canvas.paint(_box(body.y(0.19), body.y(0.75), cx - size(0.004), cx + size(0.004)), darker, 0.0)
        for fraction in (0.25, 0.33, 0.41, 0.55, 0.63):
          for side in (-1, 1):
            self.canvas.paint(_ellipse(body.y(fraction), cx + side * size(0.022), size(0.007), size(0.007)),
                              (30, 30, 30), 0.0)
    elif upper == 'jacket':
      self.canvas.paint(_box(body.y(0.485), body.y(0.525), cx - hip - size(0.006), cx + hip + size(0.006)), darker)
      if front:
        inner = _contrast_colour(self.upper_colour)
        opening = _polygon([(body.y(0.17), cx - size(0.035)), (body.y(0.17), cx + size(0.035)),
                            (body.y(0.48), cx + size(0.018)), (body.y(0.48), cx - size(0.018))])
        self.canvas.paint(opening, inner, 0.1)
        for side in (-1, 1):
          lapel = _polygon([(body.y(0.165), cx + side * size(0.035)), (body.y(0.165), cx + side * size(0.07)),
                            (body.y(0.28), cx + side * size(0.03))])
          self.canvas.paint(lapel, darker, 0.0)
      elif self.side_view:  # the open front edge shows the layer underneath
        edge = cx + body.facing * (shoulder - size(0.016))
        self.canvas.paint(_box(body.y(0.17), body.y(0.48), edge - size(0.011), edge + size(0.011)),
                          _contrast_colour(self.upper_colour), 0.1)
      else:
        self.canvas.paint(_box(body.y(0.16), body.y(0.19), cx - size(0.055), cx + size(0.055)), darker, 0.1)
    elif upper == 'shirt':
      if front:
        self.canvas.paint(_box(body.y(0.19), body.y(0.52), cx - size(0.004), cx + size(0.004)), darker, 0.0)
        for fraction in (0.24, 0.31, 0.38, 0.45):
          self.canvas.paint(_ellipse(body.y(fraction), cx, size(0.005), size(0.005)), lighter, 0.0)
        for side in (-1, 1):
          self.canvas.paint(_polygon([(body.y(0.155), cx), (body.y(0.155), cx + side * size(0.05)),
                                      (body.y(0.215), cx + side * size(0.012))]), lighter, 0.0)
      elif self.side_view:  # collar and the buttoned front edge
        self.canvas.paint(_box(body.y(0.155), body.y(0.185), cx - size(0.035), cx + size(0.035)), lighter, 0.1)
        edge = cx + body.facing * (shoulder - size(0.014))
        self.canvas.paint(_box(body.y(0.19), body.y(0.52), edge - size(0.005), edge + size(0.005)), lighter, 0.0)
      else:  # collar and the yoke seam across the shoulders
        self.canvas.paint(_box(body.y(0.155), body.y(0.185), cx - size(0.05), cx + size(0.05)), lighter, 0.1)
        self.canvas.paint(_box(body.y(0.235), body.y(0.245), cx - shoulder + size(0.01), cx + shoulder - size(0.01)),
                          lighter, 0.0)
    elif upper == 'sweater':
      self.canvas.paint(_box(body.y(0.485), body.y(0.53), cx - hip - size(0.006), cx + hip + size(0.006)), None,
                        texture=_ribs(self.upper_colour, cx))
      self.canvas.paint(_ellipse(body.y(0.165), cx, size(0.02), size(0.04)), darker, 0.1)
    if upper in ('t-shirt', 'dress') and not self.side_view:
      neck_depth = 0.03 if front else 0.012
      self.canvas.paint(_ellipse(body.y(0.165), cx, size(neck_depth), size(0.034)), self.skin, 0.1,
                        clip=lambda ys, xs: (ys >= body.y(0.165)) & (xs >= 0))

  def _arm(self, index: int, shade: float) -> None:
    pose, size, identity = self.pose, self.body.size, self.identity
    shoulder, elbow, wrist = pose.shoulders[index], pose.elbows[index], pose.wrists[index]
    skin = _scaled(self.skin, shade)
    self.canvas.paint(_capsule(*elbow, *wrist, size(0.025)), skin)
    self.canvas.paint(_capsule(*shoulder, *elbow, size(0.029)), skin)
    texture = self.upper_texture
    colour = _scaled(self.upper_colour, shade)
    if identity.sleeves == 'short':
      end = (shoulder[0] + (elbow[0] - shoulder[0]) * 0.6, shoulder[1] + (elbow[1] - shoulder[1]) * 0.6)
      self.canvas.paint(_capsule(*shoulder, *end, size(0.034)), colour, texture=texture)
    else:
      self.canvas.paint(_capsule(*elbow, *wrist, size(0.029)), colour, texture=texture)
      self.canvas.paint(_capsule(*shoulder, *elbow, size(0.034)), colour, texture=texture)
      if identity.upper == 'sweater':
        cuff_start = (elbow[0] + (wrist[0] - elbow[0]) * 0.8, elbow[1] + (wrist[1] - elbow[1]) * 0.8)
        self.canvas.paint(_capsule(*cuff_start, *wrist, size(0.03)), _scaled(colour, 0.72))
    hand = (wrist[0] + (wrist[0] - elbow[0]) * 0.18, wrist[1] + (wrist[1] - elbow[1]) * 0.18)
    self.canvas.paint(_ellipse(*hand, size(0.026), size(0.022)), skin)

  def _hand(self, index: int) -> tuple[float, float]:
    elbow, wrist = self.pose.elbows[index], self.pose.wrists[index]
    return wrist[0] + (wrist[0] - elbow[0]) * 0.25, wrist[1] + (wrist[1] - elbow[1]) * 0.25

  def _handbag(self, hand: tuple[float, float], outward: int) -> None:
    size = self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    top, cx = hand[0] + size(0.035), hand[1] + outward * size(0.015)
    for side in (-1, 1):
      self.canvas.paint(_capsule(hand[0], hand[1], top, cx + side * size(0.03), size(0.006)), _scaled(colour, 0.6))
    self.canvas.paint(_polygon([(top, cx - size(0.042)), (top, cx + size(0.042)), (top + size(0.085),
                                cx + size(0.05)), (top + size(0.085), cx - size(0.05))]), colour, 0.3)
    self.canvas.paint(_box(top, top + size(0.015), cx - size(0.042), cx + size(0.042)), _scaled(colour, 0.7), 0.1)

  def _shoulder_bag(self, bag_x: int) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    cx = body.centre
    if self.side_view:
      left, right = cx - size(0.05), cx + size(0.05)
      strap_top = (body.y(0.17), cx)
      strap_bottom = (body.y(0.45), cx)
    else:
      inner = cx + bag_x * (self.hip_half_width - size(0.03))
      outer = cx + bag_x * (self.hip_half_width + size(0.075))
      left, right = min(inner, outer), max(inner, outer)
      strap_top = (body.y(0.175), cx - bag_x * (self.shoulder_half_width - size(0.04)))
      strap_bottom = (body.y(0.45), (inner + outer) / 2)
    self.canvas.paint(_capsule(*strap_top, *strap_bottom, size(0.011)), _scaled(colour, 0.8), 0.2)
    self.canvas.paint(_box(body.y(0.45), body.y(0.56), left, right), colour, 0.3)
    self.canvas.paint(_box(body.y(0.45), body.y(0.49), left, right), _scaled(colour, 0.75), 0.1)

  def _backpack_back(self) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    cx = body.centre
    top = _capsule(body.y(0.215), cx - size(0.055), body.y(0.215), cx + size(0.055), size(0.035))
    self.canvas.paint(top, colour)
    self.canvas.paint(_box(body.y(0.21), body.y(0.45), cx - size(0.09), cx + size(0.09)), colour)
    self.canvas.paint(_box(body.y(0.33), body.y(0.43), cx - size(0.065), cx + size(0.065)), _scaled(colour, 0.78))
    self.canvas.paint(_box(body.y(0.33), body.y(0.34), cx - size(0.065), cx + size(0.065)), _scaled(colour, 0.5),
                      0.0)

  def _backpack_side(self) -> None:
    body, size, facing = self.body, self.body.size, self.body.facing
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    back = body.centre - facing * self.shoulder_half_width
    far = back - facing * size(0.085)
    self.canvas.paint(_polygon([(body.y(0.2), min(back, far)), (body.y(0.2), max(back, far)),
                                (body.y(0.45), max(back, far)), (body.y(0.45), min(back, far))]), colour, 0.3)
    self.canvas.paint(_ellipse(body.y(0.2), (back + far) / 2, size(0.02), size(0.0425)), colour, 0.2)

  def _backpack_straps(self) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    cx = body.centre
    if self.side_view:
      shoulder = (body.y(0.175), cx)
      self.canvas.paint(_capsule(*shoulder, body.y(0.4), cx - body.facing * size(0.04), size(0.013)),
                        _scaled(colour, 0.85), 0.2)
      return
    for side in (-1, 1):
      self.canvas.paint(_capsule(body.y(0.17), cx + side * size(0.06), body.y(0.4), cx + side * size(0.07),
                                 size(0.015)), _scaled(colour, 0.85), 0.2)

  def _head(self) -> None:
    body, size, identity = self.body, self.body.size, self.identity
    cx = body.centre + body.facing * size(0.012)
    head_y = body.y(0.072)
    self.canvas.paint(_box(body.y(0.11), body.y(0.18), body.centre - size(0.022), body.centre + size(0.022)),
                      _scaled(self.skin, 0.85), 0.2)
    hair_colour = HAIR_PALETTE.get(identity.hair_colour)
    visible_hair = hair_colour is not None and not (identity.hat == 'beanie' and identity.hair_length == 'short')
    if visible_hair and identity.hair_length == 'long':
      self._long_hair(hair_colour)
    self.canvas.paint(_ellipse(head_y, cx, size(0.064), size(0.05)), self.skin, 0.25)
    if self.viewpoint == 'front':
      for side in (-1, 1):
        self.canvas.paint(_ellipse(body.y(0.075), cx + side * size(0.018), size(0.006), size(0.006)),
                          (40, 30, 30), 0.0)
    elif self.side_view:
      self.canvas.paint(_ellipse(body.y(0.075), cx + body.facing * size(0.03), size(0.005), size(0.005)),
                        (40, 30, 30), 0.0)
    if visible_hair:
      self._hair_cap(hair_colour, head_y, cx)
    if identity.hat != NONE:
      self._hat(head_y, cx)

  def _long_hair(self, colour) -> None:
    body, size = self.body, self.body.size
    cx = body.centre
    if self.viewpoint == 'back':
      self.canvas.paint(_capsule(body.y(0.06), cx, body.y(0.25), cx, size(0.058)), colour, 0.3)
    elif self.side_view:
      back = -body.facing
      self.canvas.paint(_capsule(body.y(0.06), cx + back * size(0.02), body.y(0.25), cx + back * size(0.04),
                                 size(0.035)), colour, 0.3)
    else:
      for side in (-1, 1):
        self.canvas.paint(_capsule(body.y(0.05), cx + side * size(0.045), body.y(0.25), cx + side * size(0.06),
                                   size(0.022)), colour, 0.3)

  def _hair_cap(self, colour, head_y: float, cx: float) -> None:
    """Hair over the head, leaving the face free (front and side views)."""
    body, size = self.body, self.body.size
    hair = _ellipse(head_y - size(0.006), cx, size(0.068), size(0.056))
    if self.viewpoint == 'back':
      nape = body.y(0.2 if self.identity.hair_length == 'long' else 0.12)
      self.canvas.paint(hair, colour, 0.3, clip=lambda ys, xs: (ys < nape) & (xs >= 0))
      return
    face_y, face_x = head_y + size(0.016), cx + body.facing * size(0.018)
    face_ry, face_rx = size(0.058), size(0.042 if body.facing == 0 else 0.046)
    self.canvas.paint(hair, colour, 0.3, clip=lambda ys, xs: np.clip(
        (((ys - face_y) / face_ry) ** 2 + ((xs - face_x) / face_rx) ** 2 - 1.0) * 4.0, 0.0, 1.0))

  def _hat(self, head_y: float, cx: float) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.hat_colour], np.float32)
    if self.identity.hat == 'cap':
      self.canvas.paint(_ellipse(head_y - size(0.008), cx, size(0.064), size(0.056)), colour, 0.3,
                        clip=lambda ys, xs: (ys < body.y(0.035)) & (xs >= 0))
      if self.side_view:
        brim = _ellipse(body.y(0.036), cx + body.facing * size(0.058), size(0.01), size(0.045))
      elif self.viewpoint == 'front':
        brim = _ellipse(body.y(0.037), cx, size(0.014), size(0.066))
      else:
        brim = _box(body.y(0.025), body.y(0.035), cx - size(0.03), cx + size(0.03))
      self.canvas.paint(brim, _scaled(colour, 0.75), 0.2)
    else:
      self.canvas.paint(_ellipse(head_y - size(0.03), cx, size(0.07), size(0.058)), colour, 0.3,
                        clip=lambda ys, xs: (ys < body.y(0.05)) & (xs >= 0))
      self.canvas.paint(_box(body.y(0.028), body.y(0.052), cx - size(0.058), cx + size(0.058)), None, 0.2,
                        texture=_ribs(colour, cx))

  def paint(self) -> None:
    identity = self.identity
    bag = identity.bag
    if self.side_view:
      self._paint_side(bag)
    else:
      self._paint_front_or_back(bag)

  def _paint_front_or_back(self, bag: str) -> None:
    size, body = self.body.size, self.body
    if bag == 'backpack' and self.viewpoint == 'front':
      colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
      self.canvas.paint(_capsule(body.y(0.165), body.centre - size(0.06), body.y(0.165), body.centre + size(0.06),
                                 size(0.02)), _scaled(colour, 0.8))
    for index in (0, 1):
      self._leg(index, 1.0)
    self._pelvis_and_skirt()
    self._torso()
    if bag == 'backpack' and self.viewpoint == 'front':
      self._backpack_straps()
    elif bag == 'backpack':
      self._backpack_back()
    for index in (0, 1):
      self._arm(index, 1.0)
    bag_x = self._bag_side_sign()
    if bag == 'shoulder bag':
      self._shoulder_bag(bag_x)
    elif bag == 'handbag':
      self._handbag(self._hand(0 if bag_x < 0 else 1), bag_x)
    self._head()

  def _paint_side(self, bag: str) -> None:
    self._arm(1, 0.78)
    self._leg(1, 0.82)
    self._leg(0, 1.0)
    self._pelvis_and_skirt()
    if bag == 'backpack':
      self._backpack_side()
    self._torso()
    if bag == 'backpack':
      self._backpack_straps()
    if bag == 'shoulder bag' and self._bag_near():
      self._shoulder_bag(0)
    self._arm(0, 1.0)
    if bag == 'handbag' and self._bag_near():
      self._handbag(self._hand(0), 0)
    self._head()


# ----------------------------------------------------------------------------------------------------------------
# Scenes: background, distractors, the person, occluders, lighting, blur and noise
# ----------------------------------------------------------------------------------------------------------------

def _muted(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
  """A palette colour pulled towards grey by a random share in [low, high]."""
  share = rng.uniform(low, high)
  return np.asarray(PALETTE[choice(rng, COLOURS)], np.float32) * (1 - share) + 128.0 * share


@dataclasses.dataclass(frozen=True)
class CameraStyle:
  """What one camera's pictures share: scene colours, horizon height and lighting."""
  sky: np.ndarray
  wall: np.ndarray
  ground: np.ndarray
  horizon: float  # fraction of the image height
  gain: float
  cast: np.ndarray


def camera_style(seed: int, camera_id: int) -> CameraStyle:
  rng = np.random.default_rng([seed, 0, camera_id])
  return CameraStyle(sky=_muted(rng, 0.4, 0.7), wall=_muted(rng, 0.4, 0.7), ground=_muted(rng, 0.5, 0.8),
                     horizon=rng.uniform(0.45, 0.7), gain=rng.uniform(0.88, 1.12), cast=rng.uniform(0.97, 1.03, 3))


def _background(style: CameraStyle, rng: np.random.Generator) -> np.ndarray:
  rows = np.linspace(0.0, 1.0, IMAGE_HEIGHT, dtype=np.float32)[:, None, None]
  horizon = style.horizon + rng.uniform(-0.05, 0.05)
  upper = style.sky * (1 - rows / horizon) + style.wall * (rows / horizon)
  lower = style.ground * (0.8 + 0.3 * (rows - horizon) / (1 - horizon))
  pixels = np.where(rows < horizon, upper, lower) * np.ones((1, IMAGE_WIDTH, 1), np.float32)
  canvas = _Canvas(pixels.astype(np.float32))
  for _ in range(int(rng.integers(3, 9))):
    colour = _muted(rng, 0.2, 0.6)
    top = rng.uniform(-20, horizon * IMAGE_HEIGHT)
    left = rng.uniform(-30, IMAGE_WIDTH)
    if rng.random() < 0.6:
      shape = _box(top, top + rng.uniform(15, 90), left, left + rng.uniform(10, 60))
    else:
      shape = _ellipse(top, left, rng.uniform(8, 35), rng.uniform(8, 35))
    canvas.paint(shape, colour, shading=0.2)
  return canvas.pixels


def _blur(pixels: np.ndarray) -> np.ndarray:
  """One pass of the separable [1, 2, 1] / 4 filter, edges replicated."""
  padded = np.pad(pixels, ((1, 1), (0, 0), (0, 0)), mode='edge')
  pixels = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
  padded = np.pad(pixels, ((0, 0), (1, 1), (0, 0)), mode='edge')
  return (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4


def _occluder(canvas: _Canvas, occlusion: str, body: _Body, rng: np.random.Generator) -> None:
  if occlusion == 'pole':
    offset = rng.uniform(0.06, 0.14) * body.height * choice(rng, (-1, 1))
    half_width = rng.uniform(0.015, 0.025) * body.height
    canvas.paint(_box(-2, IMAGE_HEIGHT + 2, body.centre + offset - half_width, body.centre + offset + half_width),
                 _muted(rng, 0.6, 0.9), shading=0.5)
    return
  top = body.y(rng.uniform(0.8, 0.86) if occlusion == 'feet' else rng.uniform(0.4, 0.44))
  colour = _muted(rng, 0.3, 0.6)
  period = rng.uniform(6, 14)

  def planks(ys, xs):
    return np.where((((ys - top) % period) < 1.5)[..., None] & (xs >= 0)[..., None], colour * 0.6, colour)
  canvas.paint(_box(top, IMAGE_HEIGHT + 2, -2, IMAGE_WIDTH + 2), None, shading=0.0, texture=planks)


def render_image(identity: Identity, spec: ImageSpec, style: CameraStyle, rng: np.random.Generator) -> np.ndarray:
  """The picture as uint8 [IMAGE_HEIGHT, IMAGE_WIDTH, 3]."""
  canvas = _Canvas(_background(style, rng))
  height = rng.uniform(0.8, 0.92) * IMAGE_HEIGHT
  feet = IMAGE_HEIGHT - rng.uniform(3, 14)
  facing = {'left': -1, 'right': 1}.get(spec.viewpoint, 0)
  body = _Body(top=feet - height, height=height, centre=IMAGE_WIDTH / 2 + rng.uniform(-8, 8), facing=facing)
  if rng.random() < 0.35:
    scale = rng.uniform(0.7, 1.0)
    edge = choice(rng, (-1, 1))
    centre = IMAGE_WIDTH / 2 + edge * rng.uniform(0.42, 0.62) * IMAGE_WIDTH
    distractor = _Body(top=feet - rng.uniform(0, 20) - height * scale, height=height * scale, centre=centre,
                       facing=choice(rng, (-1, 0, 1)))
    distractor_view = {-1: 'left', 1: 'right'}.get(distractor.facing, choice(rng, ('front', 'back')))
    _PersonPainter(canvas, sample_identity(rng), distractor_view, distractor, rng).paint()
  canvas.paint(_ellipse(feet, body.centre, body.size(0.02), body.size(0.16)), style.ground * 0.55, shading=0.0)
  _PersonPainter(canvas, identity, spec.viewpoint, body, rng).paint()
  if spec.occlusion != 'none':
    _occluder(canvas, spec.occlusion, body, rng)
  pixels = canvas.pixels
  columns = np.linspace(-1.0, 1.0, IMAGE_WIDTH, dtype=np.float32)[None, :, None]
  lighting = style.gain * rng.uniform(0.92, 1.08) * (1 + rng.uniform(-0.15, 0.15) * columns)
  pixels = pixels * lighting * (style.cast * rng.uniform(0.98, 1.02, 3)).astype(np.float32)
  for _ in range(int(rng.choice(3, p=(0.3, 0.55, 0.15)))):
    pixels = _blur(pixels)
  pixels = pixels + rng.normal(0.0, rng.uniform(1.5, 5.0), pixels.shape).astype(np.float32)
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format='JPEG', quality=92, subsampling=0)
  return buffer.getvalue()
