"""Camera ids derived from the image paths of the text-based person search datasets.

The images of CUHK-PEDES, ICFG-PEDES and RSTPReid come from older re-id datasets whose file names (or folders)
say which camera took them. `camera_id` maps a path relative to the dataset's `imgs/` folder to a camera id that is
unique across source datasets: 100 * source + the source's own camera number. 0 means unknown: such images are left
out of the cross-camera re-id protocol.

  source             path (relative to imgs/)                        camera
  1 VIPeR            cam_a/000_45.bmp, cam_b/...                     101 (cam_a), 102 (cam_b)
  2 CUHK01           CUHK01/0363004.png (4-digit person, 3-digit     201 (images 001, 002: camera A),
                     image index)                                    202 (images 003, 004: camera B)
  3 CUHK03           CUHK03/1_001_2_07.png (camera pair 1-5, person, 300 + 2 * (pair - 1) + view: 301..310
                     view 1-2, index; the layout of extracted
                     CUHK03 images used by re-id toolkits)
  4 Market-1501      Market/0002_c1s1_000451_03.jpg                  400 + c: 401..406
  5 MSMT17           ICFG-PEDES train/0000/0000_002_01_0303morning_  500 + camera: 501..515
                     0009_0.jpg (third field), RSTPReid
                     0000_c14_0031.jpg (c field)
  - CUHK-SYSU        train_query/p11600_s14885.jpg, test_query/...   0 (no camera information)
  - CUHK03 in        CUHK03/313_3.jpg (person, image index; the      0 (the index does not say which of
    CUHK-PEDES       camera view is not recorded)                    the pair's two cameras took it)

Names made of digits only (CUHK01, CUHK03) are recognised only inside a folder of that dataset's name; the other
patterns are specific enough to be recognised anywhere.
"""
import re

UNKNOWN = 0

_VIPER_FOLDERS = {'cam_a': 101, 'cam_b': 102}
_CUHK01 = re.compile(r'\d{4}(\d{3})')
_CUHK01_CAMERAS = {1: 201, 2: 201, 3: 202, 4: 202}
_CUHK03 = re.compile(r'([1-5])_\d+_([12])_\d+')
_MARKET = re.compile(r'(?:-1|\d+)_c([1-6])s\d+_\d+_\d+')
_MSMT17_ICFG = re.compile(r'\d+_\d+_(\d{2})_\d{4}[a-z]+_\d+_\d+')
_MSMT17_RSTP = re.compile(r'\d+_c(\d{1,2})_\d+')
_MSMT17_CAMERAS = range(1, 16)


def _msmt17_camera(match: re.Match | None) -> int | None:
  """500 + camera for an MSMT17 name, UNKNOWN for an out-of-range camera, None when no match."""
  if match is None:
    return None
  camera = int(match[1])
  return 500 + camera if camera in _MSMT17_CAMERAS else UNKNOWN


def camera_id(path: str) -> int:
  """Camera id (>= 1) of the image at `path` (relative to imgs/, '/'-separated), or 0 when unknown."""
  *folders, file_name = path.split('/')
  stem = file_name.rsplit('.', 1)[0]
  for folder in folders:
    if folder in _VIPER_FOLDERS:
      return _VIPER_FOLDERS[folder]
  if match := _MARKET.fullmatch(stem):
    return 400 + int(match[1])
  for pattern in (_MSMT17_ICFG, _MSMT17_RSTP):
    camera = _msmt17_camera(pattern.fullmatch(stem))
    if camera is not None:
      return camera
  if 'CUHK01' in folders and (match := _CUHK01.fullmatch(stem)):
    return _CUHK01_CAMERAS.get(int(match[1]), UNKNOWN)
  if 'CUHK03' in folders and (match := _CUHK03.fullmatch(stem)):
    return 300 + 2 * (int(match[1]) - 1) + int(match[2])
  return UNKNOWN
