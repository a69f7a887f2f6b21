"""TensorBoard scalars for a run directory on any store.

TF writes the event file into a local staging folder and each flush uploads it through axm_jax.storage, so
TensorBoard pointed at `gs://.../tb` shows the run (TF's own GCS client is not used). TensorBoard reads raw
Summary protos, and TF needs no tensorboard package for them.
"""
import pathlib
import shutil
import tempfile

from etils import epath
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from axm_jax import storage


class SummaryWriter:
  """Writes scalar summaries to `target` (a run's tb/ directory)."""

  def __init__(self, target: epath.Path):
    self._target = target
    self._staging = pathlib.Path(tempfile.mkdtemp(prefix='axm_jax_tb_'))
    self._writer = tf.summary.create_file_writer(str(self._staging))

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, simple_value=value)
                                         for name, value in scalars.items()])
    with self._writer.as_default(step=step):
      tf.summary.experimental.write_raw_pb(summary.SerializeToString())
    self._writer.flush()
    self._upload()

  def close(self) -> None:
    self._writer.close()
    self._upload()
    shutil.rmtree(self._staging, ignore_errors=True)

  def _upload(self) -> None:
    self._target.mkdir(parents=True, exist_ok=True)
    for event_file in self._staging.iterdir():
      storage.atomic_write(self._target / event_file.name, event_file.read_bytes())
