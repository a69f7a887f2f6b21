"""TFDS builders of the real text-based person search datasets: CUHK-PEDES, ICFG-PEDES and RSTPReid.

The data is never downloaded by the code: each builder reads a directory the user obtained from the authors
(`dl_manager.manual_dir`, set through `tfds.download.DownloadConfig(manual_dir=...)`), checks it with
`annotations.inspect` (failing with the full list of problems before writing anything) and writes one example per
image with the features every builder of this project emits (CONTRACTS.md). Images that are already RGB JPEG or PNG
are stored as their original bytes; any other image (grayscale, RGBA, palette, BMP, ...) is converted to RGB and
stored as PNG, so every stored image decodes to 3 channels.
"""
import io
from typing import ClassVar, Iterator

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from axm_jax.data import annotations


def _instructions(name: str, source: str) -> str:
  """Where to get a dataset (`source`) and the directory layout the builder expects."""
  layout = annotations.LAYOUTS[name]
  return (f'{source.strip()}\n\n'
          'Expected layout of DIR, the directory given as --config.data.manual_dir:\n'
          f'  DIR/{annotations.IMAGE_FOLDER}/...  the images, at the paths the annotations give\n'
          f'  DIR/{" or ".join(layout.json_names)}  the annotations: a JSON list of records with fields '
          f'split, captions, {layout.path_field}, id\n'
          f'Check it with: python -m axm_jax.data.validate --dataset={name} --root=DIR\n')


def features() -> tfds.features.FeaturesDict:
  """The features of every real dataset (the same as SynthPedes without its attributes)."""
  return tfds.features.FeaturesDict({
      # encoding_format None: the stored bytes are JPEG or PNG, both decode to RGB.
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format=None),
      'captions': tfds.features.Sequence(tfds.features.Text()),
      'person_id': np.int64,
      'camera_id': np.int64,
      'image_key': tfds.features.Text(),
  })


def rgb_image_bytes(data: bytes) -> bytes:
  """The bytes to store for an image file: the original for RGB JPEG/PNG, else an RGB PNG re-encoding."""
  with Image.open(io.BytesIO(data)) as image:
    if image.format in ('JPEG', 'PNG') and image.mode == 'RGB':
      return data
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, format='PNG')
  return buffer.getvalue()


class _PedesBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A dataset read from a manual directory described by an annotations.Layout."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  # One config named 'default', so that tfds.builder(name, config=config.data.builder_config) works for every
  # dataset of the project.
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='default', description='The dataset as published.')]
  HOMEPAGE: ClassVar[str]
  CITATION: ClassVar[str]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features(),
                                 homepage=self.HOMEPAGE, citation=self.CITATION)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
    report = annotations.inspect(self.name, dl_manager.manual_dir)
    for warning in report.warnings:
      logging.warning('%s', warning)
    report.raise_if_fatal()
    image_root = dl_manager.manual_dir / annotations.IMAGE_FOLDER
    return {split: self._generate_examples(image_root, records) for split, records in report.splits.items()}

  def _generate_examples(self, image_root: epath.Path,
                         records: list[annotations.Record]) -> Iterator[tuple[str, dict]]:
    for record in records:
      yield record.image_key, {
          'image': rgb_image_bytes((image_root / record.image_key).read_bytes()),
          'captions': list(record.captions),
          'person_id': record.person_id,
          'camera_id': record.camera_id,
          'image_key': record.image_key,
      }


class CuhkPedes(_PedesBuilder):
  """CUHK-PEDES (Li et al., CVPR 2017): 40,206 images of 13,003 people, about two captions per image."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions('cuhk_pedes', """
CUHK-PEDES is distributed by its authors on request (see
https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description). Unpack it so that DIR holds
`imgs/` (sub-folders CUHK01, CUHK03, Market, cam_a, cam_b, test_query, train_query) and `reid_raw.json`.
""")
  HOMEPAGE = 'https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description'
  CITATION = """@inproceedings{li2017person,
  title={Person Search with Natural Language Description},
  author={Li, Shuang and Xiao, Tong and Li, Hongsheng and Zhou, Bolei and Yue, Dayu and Wang, Xiaogang},
  booktitle={CVPR},
  year={2017}
}"""


class IcfgPedes(_PedesBuilder):
  """ICFG-PEDES (Ding et al., 2021): 54,522 MSMT17 images of 4,102 people, one caption per image.

  The dataset has train and test only; 'val' holds the images of the 100 largest person ids of the published train
  split, which are removed from train.
  """

  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions('icfg_pedes', """
ICFG-PEDES is distributed by its authors on request (see https://github.com/zifyloo/SSAN). Unpack it so that DIR
holds `imgs/` (sub-folders train and test) and `ICFG-PEDES.json` (`ICFG_PEDES.json` is accepted too).
""")
  HOMEPAGE = 'https://github.com/zifyloo/SSAN'
  CITATION = """@article{ding2021semantically,
  title={Semantically Self-Aligned Network for Text-to-Image Part-aware Person Re-identification},
  author={Ding, Zefeng and Ding, Changxing and Shao, Zhiyin and Tao, Dacheng},
  journal={arXiv preprint arXiv:2107.12666},
  year={2021}
}"""


class RstpReid(_PedesBuilder):
  """RSTPReid (Zhu et al., ACM MM 2021): 20,505 MSMT17 images of 4,101 people, two captions per image."""

  name = 'rstpreid'
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions('rstpreid', """
RSTPReid is distributed by its authors (see https://github.com/NjtechCVLab/RSTPReid-Dataset). Unpack it so that DIR
holds `imgs/` (the images, directly inside) and `data_captions.json` (image paths in the field `img_path`).
""")
  HOMEPAGE = 'https://github.com/NjtechCVLab/RSTPReid-Dataset'
  CITATION = """@inproceedings{zhu2021dssl,
  title={DSSL: Deep Surroundings-person Separation Learning for Text-based Person Retrieval},
  author={Zhu, Aichun and Wang, Zijie and Li, Yifeng and Wan, Xili and Jin, Jing and Wang, Tian and Hu, Fangqiang
          and Hua, Gang},
  booktitle={ACM International Conference on Multimedia},
  year={2021}
}"""


BUILDERS = {builder.name: builder for builder in (CuhkPedes, IcfgPedes, RstpReid)}
