"""Tests of camera ids derived from real-looking image paths."""
import pytest

from axm_jax.data import cameras


@pytest.mark.parametrize('path,camera', [
    # VIPeR: the folder is the camera.
    ('cam_a/000_45.bmp', 101),
    ('cam_b/872_90.bmp', 102),
    # CUHK01: images 001-002 camera A, 003-004 camera B.
    ('CUHK01/0363001.png', 201),
    ('CUHK01/0363002.png', 201),
    ('CUHK01/0363003.png', 202),
    ('CUHK01/0363004.png', 202),
    ('CUHK01/0363005.png', 0),
    ('test_query/0363004.png', 0),  # a CUHK01-like name outside CUHK01/
    # CUHK03: camera pair and view in the toolkit naming; CUHK-PEDES's person_index names say nothing.
    ('CUHK03/1_001_1_01.png', 301),
    ('CUHK03/1_001_2_06.png', 302),
    ('CUHK03/5_049_2_10.png', 310),
    ('CUHK03/313_3.jpg', 0),
    ('CUHK03/392_1.jpg', 0),
    # Market-1501.
    ('Market/0002_c1s1_000451_03.jpg', 401),
    ('Market/0013_c5s1_000426_00.jpg', 405),
    ('Market/1501_c6s4_001877_02.jpg', 406),
    ('Market/-1_c3s2_000125_01.jpg', 403),
    # MSMT17 in ICFG-PEDES and RSTPReid.
    ('train/0000/0000_002_01_0303morning_0009_0.jpg', 501),
    ('test/0027/0027_013_15_0113afternoon_0730_1.jpg', 515),
    ('0000_c14_0031.jpg', 514),
    ('3900_c1_0004.jpg', 501),
    ('0000_c16_0031.jpg', 0),  # MSMT17 has 15 cameras
    # CUHK-SYSU queries carry no camera.
    ('train_query/p11600_s14885.jpg', 0),
    ('test_query/p2740_s3591.jpg', 0),
    ('unrelated/picture.jpg', 0),
])
def test_camera_id(path, camera):
  assert cameras.camera_id(path) == camera


def test_sources_do_not_share_camera_ids():
  viper = {cameras.camera_id(f'{folder}/000_45.bmp') for folder in ('cam_a', 'cam_b')}
  cuhk01 = {cameras.camera_id(f'CUHK01/0001{index:03d}.png') for index in range(1, 5)}
  cuhk03 = {cameras.camera_id(f'CUHK03/{pair}_001_{view}_01.png') for pair in range(1, 6) for view in (1, 2)}
  market = {cameras.camera_id(f'Market/0001_c{camera}s1_000001_00.jpg') for camera in range(1, 7)}
  msmt17 = {cameras.camera_id(f'0000_c{camera}_0001.jpg') for camera in range(1, 16)}
  groups = [viper, cuhk01, cuhk03, market, msmt17]
  assert [len(group) for group in groups] == [2, 2, 10, 6, 15]
  assert len(set().union(*groups)) == 35
  assert min(min(group) for group in groups) >= 1
