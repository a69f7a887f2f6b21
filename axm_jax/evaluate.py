"""Evaluation: embeddings over the padded streams, person search and cross-modal re-id protocols, reports.

Protocols on one split (SPEC §5; metric definitions in axm_jax.metrics):
  t2i        every caption is a query against every image; positives = images of the caption's identity.
  i2t        every image is a query against every caption; positives = captions of the image's identity.
  reid_v2v   every image is a query against all images of the split, as in standard all-vs-all re-id
             evaluation: per query, the images of its identity taken by its camera are removed (the query
             itself among them), so query and positives always come from different cameras. Images with an
             unknown camera (camera_id 0) take no part (neither query nor gallery). Queries left without any
             positive are skipped and counted (reid_v2v_skipped_queries).
  reid_t2v   the same with each caption as the query, carrying the identity and camera of the image it
             describes.
  reid_vt2v  the same with each (image, caption of that image) pair as the query, embedded with
             axm_net.image_text_query; one query per caption.
Names in the returned dict: <protocol>_r<K> for K in config.eval.ranks, <protocol>_map, <protocol>_minp (percent),
<protocol>_queries, <protocol>_skipped_queries, and reid_unknown_camera_images.

Cross-dataset evaluation (config.eval.dataset, --mode=eval): the run's model and tokenizer on another dataset's
splits, at the run's image size (run.evaluation_config), refused where the run's tokenizer does not know more than
config.eval.max_unknown_token_fraction of the split's caption tokens; reports go to eval/<dataset>_<split>_<step>.*.
"""
from collections.abc import Callable, Iterable, Mapping
import dataclasses
import io
import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from axm_jax import encoders
from axm_jax import metrics
from axm_jax import plots
from axm_jax import run
from axm_jax import storage
from axm_jax.data import pipeline
from axm_jax.data import tokenizer as tokenizer_lib
from axm_jax.data.synthetic.builder import SynthPedes
from axm_jax.models import axm_net

CMC_MAX_RANK = 20
PICTURE_TOP_K = 10
REID_PROTOCOLS = ('reid_v2v', 'reid_t2v', 'reid_vt2v')
# config.eval.dataset: a dataset name, or SynthPedes with one of its builder configs.
EVAL_DATASETS = pipeline.DATASET_NAMES + tuple(f'synth_pedes/{c.name}' for c in SynthPedes.BUILDER_CONFIGS)

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Embeddings:
  """Embeddings of every example of one stream, row i = the example with stream index i."""
  vectors: np.ndarray  # float32 [N, E]
  person_ids: np.ndarray  # int64 [N]
  camera_ids: np.ndarray  # int64 [N]
  image_index: np.ndarray  # int64 [N], the split image each row shows or describes


def extract_embeddings(encode: encoders.Encoder, variables: PyTree, batches: Iterable[dict[str, np.ndarray]],
                       input_keys: tuple[str, ...]) -> Embeddings:
  """Runs a pmapped encoder over a padded stream and keeps the valid rows, ordered by the stream's `index`.

  `variables` are replicated over the local devices; every batch has leading axes [devices, per_device_batch].
  """
  outputs, valid, person_ids, camera_ids, index, image_index = [], [], [], [], [], []
  for batch in batches:
    outputs.append(encode(variables, *(batch[key] for key in input_keys)))  # dispatched asynchronously
    valid.append(np.reshape(batch['valid'], -1))
    person_ids.append(np.reshape(batch['person_id'], -1))
    camera_ids.append(np.reshape(batch['camera_id'], -1))
    index.append(np.reshape(batch['index'], -1))
    image_index.append(np.reshape(batch.get('image_index', batch['index']), -1))
  if not outputs:
    raise ValueError('the evaluation stream yielded no batch')
  valid = np.concatenate(valid)
  vectors = np.concatenate([np.asarray(o, np.float32).reshape(-1, o.shape[-1]) for o in outputs])[valid]
  index = np.concatenate(index)[valid]
  order = np.argsort(index, kind='stable')
  if not np.array_equal(index[order], np.arange(len(index))):
    raise ValueError('the evaluation stream must yield every example exactly once (valid rows with index '
                     f'0..N-1); got {len(index)} valid rows with indices {np.unique(index)[:10]}...')
  pick = lambda parts: np.concatenate(parts)[valid][order].astype(np.int64)
  return Embeddings(vectors=vectors[order], person_ids=pick(person_ids), camera_ids=pick(camera_ids),
                    image_index=pick(image_index))


def compute_embeddings(variables: PyTree, model: axm_net.AXMNet, split: pipeline.SplitData,
                       tokenizer: tokenizer_lib.Tokenizer,
                       config: ml_collections.ConfigDict) -> tuple[Embeddings, Embeddings]:
  """(image embeddings of the gallery stream, text embeddings of the query stream) of one split."""
  encode_image, encode_text = encoders.make_encoders(model)
  replicated = flax.jax_utils.replicate(variables)
  batch_size, devices = config.data.eval_batch_size, jax.local_device_count()
  images = extract_embeddings(
      encode_image, replicated, pipeline.gallery_batches(split, config.data, batch_size, devices), ('image',))
  texts = extract_embeddings(
      encode_text, replicated, pipeline.query_batches(split, tokenizer, config.data, batch_size, devices),
      ('text_ids', 'text_mask'))
  return images, texts


def similarity_rows(queries: np.ndarray, gallery: np.ndarray) -> Callable[[int, int], np.ndarray]:
  """(start, stop) -> queries[start:stop] @ gallery.T (float32, NumPy): only one chunk of rows exists at a time.

  NumPy, not JAX on the accelerator: benchmarks/metrics_speed.py measured the device product no faster on CPU
  and slower on an H100 host (moving the float32 rows back to the host for ranking costs more than the product).
  """
  return lambda start, stop: queries[start:stop] @ gallery.T


def person_search_statistics(images: Embeddings, texts: Embeddings,
                             query_chunk: int) -> dict[str, metrics.RankStatistics]:
  """t2i and i2t over the whole split."""
  return {
      't2i': metrics.retrieval_statistics(similarity_rows(texts.vectors, images.vectors), texts.person_ids,
                                          images.person_ids, query_chunk),
      'i2t': metrics.retrieval_statistics(similarity_rows(images.vectors, texts.vectors), images.person_ids,
                                          texts.person_ids, query_chunk),
  }


def image_text_queries(images: Embeddings, texts: Embeddings) -> np.ndarray:
  """VT->V query embeddings: each caption combined with the image it describes, float32 [num_texts, E]."""
  combined = axm_net.image_text_query(jnp.asarray(images.vectors[texts.image_index]), jnp.asarray(texts.vectors))
  return np.asarray(combined, np.float32)


def reid_statistics(images: Embeddings, texts: Embeddings, query_chunk: int) -> dict[str, metrics.RankStatistics]:
  """Cross-camera re-id with image, text and image+text queries against the split's images."""
  queries = {
      'reid_v2v': (images.vectors, images),
      'reid_t2v': (texts.vectors, texts),
      'reid_vt2v': (image_text_queries(images, texts), texts),
  }
  return {
      name: metrics.reid_statistics(similarity_rows(vectors, images.vectors), source.person_ids,
                                    source.camera_ids, images.person_ids, images.camera_ids, query_chunk)
      for name, (vectors, source) in queries.items()
  }


def split_statistics(variables: PyTree, model: axm_net.AXMNet, split: pipeline.SplitData,
                     tokenizer: tokenizer_lib.Tokenizer,
                     config: ml_collections.ConfigDict) -> tuple[dict[str, metrics.RankStatistics], Embeddings,
                                                                 Embeddings]:
  """Statistics of every protocol of the split (re-id only with config.eval.reid), and the embeddings."""
  images, texts = compute_embeddings(variables, model, split, tokenizer, config)
  statistics = person_search_statistics(images, texts, config.eval.query_chunk)
  if config.eval.reid:
    statistics.update(reid_statistics(images, texts, config.eval.query_chunk))
  return statistics, images, texts


def flat_metrics(statistics: Mapping[str, metrics.RankStatistics], ranks: Iterable[int],
                 images: Embeddings) -> dict[str, float]:
  """<protocol>_<metric> names; re-id adds reid_unknown_camera_images."""
  flat = {}
  for protocol, protocol_statistics in statistics.items():
    summary = metrics.summarize(protocol_statistics, ranks)
    del summary['unknown_camera_queries']  # reported once per split, as reid_unknown_camera_images
    flat.update({f'{protocol}_{name}': value for name, value in summary.items()})
  if any(protocol in statistics for protocol in REID_PROTOCOLS):
    flat['reid_unknown_camera_images'] = float(np.sum(images.camera_ids == 0))
  return flat


def evaluate_split(variables: PyTree, model: axm_net.AXMNet, split: pipeline.SplitData,
                   tokenizer: tokenizer_lib.Tokenizer, config: ml_collections.ConfigDict) -> dict[str, float]:
  """Every protocol's metrics on one split, flat names (module docstring)."""
  statistics, images, _ = split_statistics(variables, model, split, tokenizer, config)
  return flat_metrics(statistics, config.eval.ranks, images)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, split_name: str,
                        which: str | int) -> tuple[int, dict[str, float]]:
  """Restores checkpoint `which` of the run in `workdir`, evaluates one split, writes its reports.

  Returns the checkpoint's step and the flat metrics.
  """
  trained = run.open_trained(workdir, which, config)
  split = pipeline.load_split(trained.config.data, split_name)
  return trained.step, _evaluate_and_report(trained, split_name, split)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict[str, float]]:
  """--mode=eval: evaluates checkpoint config.eval.checkpoint on every split of config.eval.splits.

  Model and data come from the run's own config (config.json); the `eval` section and the machine-specific
  data fields (data_dir, manual_dir, eval_batch_size) come from `config` (run.evaluation_config); with
  config.eval.dataset, the splits are that dataset's, each checked before any is evaluated (module docstring).
  """
  if config.eval.dataset not in ('',) + EVAL_DATASETS:
    raise run.CrossDatasetError(f'config.eval.dataset = {config.eval.dataset!r} is not a dataset; expected "" (the '
                                f"run's own) or one of {', '.join(EVAL_DATASETS)}.")
  trained = run.open_trained(workdir, config.eval.checkpoint, config)
  encoders.precompile_encoders(trained.model, trained.variables, trained.config.data)
  splits = {split_name: pipeline.load_split(trained.config.data, split_name) for split_name in config.eval.splits}
  if config.eval.dataset:
    for split_name, split in splits.items():
      check_tokenizer_coverage(trained.tokenizer, split, split_name, config.eval)
  return {split_name: _evaluate_and_report(trained, split_name, split) for split_name, split in splits.items()}


def _evaluate_and_report(trained: run.TrainedRun, split_name: str, split: pipeline.SplitData) -> dict[str, float]:
  """Evaluates one split; process 0 writes eval/[<dataset>_]<split>_<step>.json and pictures, prints a table."""
  config, step, dataset = trained.config, trained.step, trained.config.eval.dataset
  statistics, images, texts = split_statistics(trained.variables, trained.model, split, trained.tokenizer, config)
  flat = flat_metrics(statistics, config.eval.ranks, images)
  if jax.process_index() == 0:
    report = lambda suffix: trained.directory.eval_report(split_name, step, suffix, dataset)
    trained.directory.eval.mkdir(parents=True, exist_ok=True)
    cross_dataset = {'dataset': dataset} if dataset else {}
    storage.atomic_write(report('.json'), json.dumps(
        {**cross_dataset, 'split': split_name, 'step': step, 'metrics': flat}, indent=2))
    heading = f'{dataset} {split_name}' if dataset else split_name
    print(format_table(statistics, config.eval.ranks, f'{heading} split, checkpoint step {step}'))
    title = f'{config.data.name} {split_name}, step {step}'
    storage.atomic_write(report('_cmc.png'), plots.cmc_png(
        {name: metrics.cmc_curve(s, CMC_MAX_RANK) for name, s in statistics.items()}, f'CMC, {title}'))
    if config.eval.num_picture_queries > 0:
      storage.atomic_write(report('_retrievals.png'), plots.retrievals_png(
          picture_retrievals(split, images, texts, config.eval.num_picture_queries), f'T->V top-{PICTURE_TOP_K}, '
          f'{title}'))
  return flat


def check_tokenizer_coverage(tokenizer: tokenizer_lib.Tokenizer, split: pipeline.SplitData, split_name: str,
                             eval_config: ml_collections.ConfigDict) -> None:
  """Refuses a cross-dataset split whose captions the run's tokenizer does not cover (too many unknown tokens)."""
  fraction = tokenizer.unknown_fraction(pipeline.flat_captions(split))
  if fraction > eval_config.max_unknown_token_fraction:
    raise run.CrossDatasetError(
        f"config.eval.dataset = {eval_config.dataset!r}: the run's tokenizer does not know {fraction:.2%} of the "
        f"tokens of the {split_name} split's captions, more than config.eval.max_unknown_token_fraction = "
        f'{eval_config.max_unknown_token_fraction:.2%}; its text queries would be meaningless. Evaluate on a '
        "dataset whose captions the run's tokenizer covers.")


def format_table(statistics: Mapping[str, metrics.RankStatistics], ranks: Iterable[int], title: str) -> str:
  """A fixed-width table: one row per protocol, R@K / mAP / mINP in percent and the query counts."""
  ranks = list(ranks)
  header = ['protocol', *[f'R@{k}' for k in ranks], 'mAP', 'mINP', 'queries', 'skipped']
  lines = [title, ''.join(f'{h:>10}' for h in header)]
  for protocol, protocol_statistics in statistics.items():
    summary = metrics.summarize(protocol_statistics, ranks)
    values = [summary[f'r{k}'] for k in ranks] + [summary['map'], summary['minp']]
    lines.append(f'{protocol:>10}' + ''.join(f'{v:10.2f}' for v in values) +
                 f'{int(summary["queries"]):10d}{int(summary["skipped_queries"]):10d}')
  return '\n'.join(lines)


def picture_retrievals(split: pipeline.SplitData, images: Embeddings, texts: Embeddings,
                       num_queries: int) -> list[plots.Retrieval]:
  """T->V top-k of `num_queries` captions spread evenly over the query stream."""
  captions = pipeline.flat_captions(split)
  chosen = np.unique(np.linspace(0, len(texts.vectors) - 1, num_queries).round().astype(np.int64))
  top = metrics.top_k(similarity_rows(texts.vectors[chosen], images.vectors)(0, len(chosen)), PICTURE_TOP_K)
  return [
      plots.Retrieval(caption=captions[query], query_person_id=int(texts.person_ids[query]),
                      images=[decode_image(split.images[g]) for g in gallery],
                      hits=[bool(h) for h in images.person_ids[gallery] == texts.person_ids[query]],
                      person_ids=[int(p) for p in images.person_ids[gallery]])
      for query, gallery in zip(chosen, top)
  ]


def decode_image(encoded: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(encoded)).convert('RGB'))
