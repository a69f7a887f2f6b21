"""Tests of the CUHK-PEDES / ICFG-PEDES / RSTPReid builders (TFDS harness, fake directories) and configs."""
import io
import os
import shutil
import tempfile

import fake_pedes
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from axm_jax import config_files
from axm_jax.data import pedes
from axm_jax.data import annotations
from axm_jax.data import validate


class _FakeDirTestCase(tfds.testing.DatasetBuilderTestCase):
  """Runs TFDS's builder harness with a fake manual directory made in setUpClass."""

  @classmethod
  def make_fake(cls, root: str) -> fake_pedes.FakeDataset:
    raise NotImplementedError

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.fake_root = tempfile.mkdtemp()
    fake = cls.make_fake(cls.fake_root)
    cls.EXAMPLE_DIR = cls.fake_root
    cls.SPLITS = fake.counts()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.fake_root)
    super().tearDownClass()


class CuhkPedesTest(_FakeDirTestCase):
  DATASET_CLASS = pedes.CuhkPedes

  @classmethod
  def make_fake(cls, root):
    return fake_pedes.make_cuhk_pedes(root)


class IcfgPedesTest(_FakeDirTestCase):
  DATASET_CLASS = pedes.IcfgPedes

  @classmethod
  def make_fake(cls, root):
    return fake_pedes.make_icfg_pedes(root, json_name='ICFG-PEDES.json')


class IcfgPedesUnderscoreNameTest(_FakeDirTestCase):
  DATASET_CLASS = pedes.IcfgPedes

  @classmethod
  def make_fake(cls, root):
    return fake_pedes.make_icfg_pedes(root, json_name='ICFG_PEDES.json')


class RstpReidTest(_FakeDirTestCase):
  DATASET_CLASS = pedes.RstpReid

  @classmethod
  def make_fake(cls, root):
    return fake_pedes.make_rstpreid(root)


del _FakeDirTestCase  # only its subclasses are tests


def _build(builder_class, manual_dir: str, data_dir: str):
  builder = builder_class(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def test_cuhk_examples_match_the_fake_directory(tmp_path):
  fake = fake_pedes.make_cuhk_pedes(str(tmp_path / 'manual'))
  builder = _build(pedes.CuhkPedes, str(tmp_path / 'manual'), str(tmp_path / 'data'))
  expected = {image.image_key: image for image in fake.images}
  seen = set()
  for split in ('train', 'val', 'test'):
    stored = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
    decoded = builder.as_dataset(split=split)
    for raw, example in zip(tfds.as_numpy(stored), tfds.as_numpy(decoded)):
      key = example['image_key'].decode()
      image = expected[key]
      seen.add(key)
      assert split == image.split
      assert [caption.decode() for caption in example['captions']] == list(image.captions)
      assert (example['person_id'], example['camera_id']) == (image.person_id, image.camera_id)
      path = os.path.join(fake.root, 'imgs', key)
      reference = np.asarray(Image.open(path).convert('RGB'))
      np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw['image']))), reference)
      assert example['image'].shape == reference.shape  # TF's JPEG decoder may differ from PIL's by a few levels
      with open(path, 'rb') as file:
        original = file.read()
      keeps_original = image.mode == 'RGB' and not key.endswith('.bmp')
      assert (raw['image'] == original) == keeps_original
  assert seen == set(expected)


def test_builder_fails_with_every_problem_before_writing(tmp_path):
  fake = fake_pedes.make_cuhk_pedes(str(tmp_path / 'manual'))
  records = fake.load_records()
  market = fake.record_index('Market/0005_c1s1_000000_00.jpg')
  cam_b = fake.record_index('cam_b/002_45.bmp')
  cuhk01 = fake.record_index('CUHK01/0003001.png')
  records[market]['file_path'] = '../../etc/passwd'
  records[cuhk01]['captions'] = ['  ', '\n']
  fake.save_records(records)
  os.remove(os.path.join(fake.root, 'imgs', 'cam_b', '002_45.bmp'))
  problems = {
      market: f"record {market} (file_path '../../etc/passwd', id 5): path '../../etc/passwd' leaves imgs/",
      cam_b: f"record {cam_b} (file_path 'cam_b/002_45.bmp', id 2): image imgs/cam_b/002_45.bmp not found",
      cuhk01: f"record {cuhk01} (file_path 'CUHK01/0003001.png', id 3): no non-empty caption",
  }
  with pytest.raises(annotations.DatasetError) as raised:
    _build(pedes.CuhkPedes, fake.root, str(tmp_path / 'data'))
  assert str(raised.value) == '\n'.join(
      [f'cuhk_pedes: 3 problem(s) in {fake.root}:'] + [f'  {problems[index]}' for index in sorted(problems)])
  assert not list((tmp_path / 'data').glob('cuhk_pedes/**/dataset_info.json'))


def test_validate_command_builds_a_clean_directory(tmp_path, capsys):
  fake = fake_pedes.make_rstpreid(str(tmp_path / 'manual'))
  data_dir = tmp_path / 'data'
  assert validate.check('rstpreid', fake.root, str(data_dir)) == 0
  assert capsys.readouterr().out.splitlines()[-1] == f'built {data_dir}/rstpreid/default/1.0.0'
  builder = pedes.RstpReid(data_dir=str(data_dir))
  assert {split: info.num_examples for split, info in builder.info.splits.items()} == fake.counts()


def _encoded(image: Image.Image, image_format: str) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=image_format)
  return buffer.getvalue()


@pytest.mark.parametrize('mode,image_format,kept', [
    ('RGB', 'JPEG', True), ('RGB', 'PNG', True), ('L', 'JPEG', False), ('L', 'PNG', False),
    ('RGBA', 'PNG', False), ('P', 'PNG', False), ('RGB', 'BMP', False)])
def test_rgb_image_bytes(mode, image_format, kept):
  pixels = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3) * 7
  image = Image.fromarray(pixels)
  image = image.quantize(colors=4) if mode == 'P' else image.convert(mode)
  data = _encoded(image, image_format)
  stored = pedes.rgb_image_bytes(data)
  assert (stored == data) == kept
  result = Image.open(io.BytesIO(stored))
  assert result.mode == 'RGB' and result.format in ('JPEG', 'PNG')
  np.testing.assert_array_equal(np.asarray(result), np.asarray(Image.open(io.BytesIO(data)).convert('RGB')))


@pytest.mark.parametrize('name,train_images', [
    ('cuhk_pedes', 34_054), ('icfg_pedes', 34_674), ('rstpreid', 18_505)])
def test_paper_scale_configs(name, train_images):
  config = config_files.load_config(f'configs/{name}.py')
  assert config.data.name == name and config.data.manual_dir == ''
  assert config.data.image_size == (384, 128) and config.data.text_length == 64
  assert config.data.vocab_size == config.model.vocab_size == 5000
  assert (config.data.identities_per_batch, config.data.images_per_identity) == (16, 4)
  assert (config.model.width, config.model.stripes, config.model.embed_dim) == (1.0, 6, 512)
  assert config.optim.learning_rate == 3.5e-4
  assert config.train.num_steps == -(-60 * train_images // 64)
  assert config.optim.warmup_steps == -(-5 * train_images // 64)
  assert config.model.dtype == 'float32'
  assert config.loss.triplet_warmup_steps == config.optim.warmup_steps  # the triplet ramps with the learning rate
  synthetic_loss = dict(config_files.load_config('configs/synthetic.py').loss.to_dict(),
                        triplet_warmup_steps=config.optim.warmup_steps)
  assert config.loss.to_dict() == synthetic_loss


def test_tpu_variant():
  gpu, tpu = config_files.load_config('configs/cuhk_pedes.py'), config_files.load_config('configs/cuhk_pedes.py:tpu')
  assert tpu.model.dtype == 'bfloat16'
  assert tpu.data.eval_batch_size > gpu.data.eval_batch_size
  assert tpu.train.num_steps == gpu.train.num_steps
  with pytest.raises(ValueError, match="unknown config variant 'gpu'; expected 'tpu' or none"):
    config_files.load_config('configs/cuhk_pedes.py:gpu')
