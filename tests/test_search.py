"""Person search on a folder of images: index, query (CLI and library), top-K, file formats, web page in Chromium."""
import base64
import dataclasses
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from axm_jax import run
from axm_jax.data import pipeline
from axm_jax.search import embed
from axm_jax.search import images
from axm_jax.search import indexer
from axm_jax.search import searcher as searcher_lib
from axm_jax.search import server
from axm_jax.search import store
from axm_jax.search import topk
from conftest import REPO

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'


def run_search(*args: str, check: bool = True) -> subprocess.CompletedProcess:
  """`python -m axm_jax.search ARGS` in a fresh process with 8 CPU devices."""
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  result = subprocess.run([sys.executable, '-m', 'axm_jax.search', *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  if check and result.returncode:
    raise AssertionError(f'search {args} failed:\n{result.stderr[-4000:]}')
  return result


@dataclasses.dataclass(frozen=True)
class Gallery:
  folder: pathlib.Path
  index: pathlib.Path
  captions: list[str]
  caption_person_ids: list[int]
  index_result: subprocess.CompletedProcess


@pytest.fixture(scope='module')
def gallery(tmp_path_factory, smoke_run, tfds_dir) -> Gallery:
  """The smoke run's test images as files named <person id>_<n>.png (camera folders), two bad files, the index."""
  config = run.load_config(run.RunDirectory(smoke_run))
  config.data.data_dir = str(tfds_dir)
  split = pipeline.load_split(config.data, 'test')
  folder = tmp_path_factory.mktemp('gallery')
  for number, (encoded, person_id, camera_id) in enumerate(zip(split.images, split.person_ids, split.camera_ids)):
    path = folder / f'camera_{camera_id}' / f'{person_id:04d}_{number:03d}.png'
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(encoded)  # SynthPedes stores PNG: the evaluation decodes exactly these bytes
  (folder / 'bad').mkdir()
  (folder / 'bad' / 'truncated.png').write_bytes(split.images[0][:len(split.images[0]) // 2])
  (folder / 'bad' / 'notes.jpg').write_text('a text file, not a JPEG\n')
  index = tmp_path_factory.mktemp('index') / 'index'
  result = run_search('index', f'--workdir={smoke_run}', f'--images={folder}', f'--index={index}')
  return Gallery(folder, index, pipeline.flat_captions(split),
                 [int(p) for p, captions in zip(split.person_ids, split.captions) for _ in captions], result)


@pytest.fixture(scope='module')
def searcher(gallery) -> searcher_lib.Searcher:
  return searcher_lib.Searcher(str(gallery.index))


def _person_id(path: str) -> int:
  return int(path.rsplit('/', 1)[-1].split('_')[0])


def test_index_names_the_bad_files_and_indexes_the_rest(gallery):
  lines = gallery.index_result.stderr.splitlines()
  assert 'skipped bad/notes.jpg: not an image (no known image format)' in lines
  assert any(line.startswith('skipped bad/truncated.png: not a decodable image (') for line in lines)
  assert any('images/s' in line for line in lines)
  index = store.open_index(str(gallery.index))
  assert len(index) == len(list(gallery.folder.glob('camera_*/*.png')))
  assert index.vectors()[0].shape[1] == index.embed_dim
  assert 'bad/notes.jpg' not in index.paths() and 'bad/truncated.png' not in index.paths()
  assert gallery.index_result.stdout.strip().endswith(
      f'{len(index)} images ({len(index)} embedded, 0 unchanged, 0 dropped as deleted or modified, 2 skipped), '
      f'model step {index.checkpoint_step}')


def test_text_queries_reproduce_the_evaluators_t2i_r1(gallery, smoke_run, tmp_path):
  """A hit = the top-1 file's person id; R@1 over every test caption equals the evaluator's t2i R@1."""
  queries = tmp_path / 'captions.txt'
  queries.write_text('\n'.join(gallery.captions) + '\n')
  result = run_search('query', f'--index={gallery.index}', f'--queries={queries}', '--top_k=1')
  answers = [json.loads(line) for line in result.stdout.splitlines()]
  assert [answer['query'] for answer in answers] == [{'text': caption} for caption in gallery.captions]
  hits = [_person_id(answer['results'][0]['path']) == person_id
          for answer, person_id in zip(answers, gallery.caption_person_ids)]
  test_rows = [json.loads(line) for line in (smoke_run / 'metrics.jsonl').read_text().splitlines()
               if json.loads(line)['split'] == 'test']
  assert 100 * np.mean(hits) == pytest.approx(test_rows[-1]['t2i_r1'], abs=0.1)


def test_image_query_returns_the_image_itself_first(gallery, searcher):
  path = sorted(searcher.paths)[5]
  results = searcher.query(image=(gallery.folder / path).read_bytes(), top_k=3)
  assert results[0].path == path and results[0].rank == 1
  assert results[0].score == pytest.approx(1.0, abs=1e-4)
  assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)


def test_query_cli_json_table_and_picture(gallery, searcher, tmp_path):
  path = searcher.paths[0]
  picture = tmp_path / 'sheet.png'
  result = run_search('query', f'--index={gallery.index}', f'--image={gallery.folder / path}',
                      f'--text={gallery.captions[0]}', '--top_k=4', '--json', f'--picture={picture}')
  answer = json.loads(result.stdout)
  expected = searcher.query(gallery.captions[0], (gallery.folder / path).read_bytes(), 4)
  assert answer['query'] == {'text': gallery.captions[0], 'image': str(gallery.folder / path)}
  assert [r['path'] for r in answer['results']] == [r.path for r in expected]
  assert [r['rank'] for r in answer['results']] == [1, 2, 3, 4]
  assert [r['score'] for r in answer['results']] == pytest.approx([r.score for r in expected], abs=1e-5)
  with Image.open(picture) as sheet:
    assert sheet.format == 'PNG' and sheet.width > sheet.height
  table = searcher_lib.format_table(expected).splitlines()
  assert table[0].split() == ['rank', 'score', 'path']
  assert table[1].split() == ['1', f'{expected[0].score:.4f}', expected[0].path]


def test_query_cli_user_error_is_one_line_with_status_2():
  result = run_search('query', '--index=/nonexistent/index', '--text=a man', check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      'axm_jax.search query: error: --index=/nonexistent/index: no index there (manifest.json not found); build '
      'one with `python -m axm_jax.search index`')


def test_unreadable_query_inputs_are_named(gallery, tmp_path):
  with pytest.raises(ValueError, match='^--image=/nonexistent.png: cannot read it'):
    searcher_lib.read_query_image('/nonexistent.png')
  with pytest.raises(ValueError, match=r'^--image=.*notes\.jpg: not an image'):
    searcher_lib.read_query_image(str(gallery.folder / 'bad' / 'notes.jpg'))
  queries = tmp_path / 'queries.txt'
  queries.write_text('a man in a red coat\n\na woman\n')
  with pytest.raises(ValueError, match='line 2 is empty; expected one sentence per line'):
    searcher_lib.read_queries(str(queries))


def test_empty_sentence_and_another_model_are_refused(gallery, searcher):
  with pytest.raises(ValueError, match='sentence 1 is empty'):
    searcher.query(text='  ')
  other = dataclasses.replace(searcher.model, fingerprint='0' * 64)
  with pytest.raises(ValueError, match=r'was embedded by the model of .* is another model'):
    indexer.check_model(searcher.index, other)


def test_reindex_embeds_only_new_and_modified_files_and_drops_deleted(gallery, searcher, tmp_path):
  folder = tmp_path / 'folder'
  files = sorted(gallery.folder.glob('camera_*/*.png'))[:6]
  for file in files[:4]:
    (folder / file.parent.name).mkdir(parents=True, exist_ok=True)
    shutil.copy(file, folder / file.parent.name / file.name)
  index = str(tmp_path / 'index')
  first = indexer.index_folder(searcher.model, str(folder), index, shard_rows=3)
  assert (first.indexed, first.embedded, first.skipped) == (4, 4, [])
  before = store.open_index(index)
  deleted, modified = before.paths()[0], before.paths()[1]
  (folder / deleted).unlink()
  (folder / modified).write_bytes(files[4].read_bytes())  # another picture under the same name
  added = f'new/{files[5].name}'
  (folder / 'new').mkdir()
  shutil.copy(files[5], folder / added)
  second = indexer.index_folder(searcher.model, str(folder), index, shard_rows=3)
  assert (second.indexed, second.embedded, second.unchanged, second.deleted) == (4, 2, 2, 2)
  after = store.open_index(index)
  assert sorted(after.paths()) == sorted(set(before.paths()) - {deleted} | {added})
  vectors = dict(zip(after.paths(), np.concatenate(after.vectors())))
  reference = embed.embed_images(searcher.model, [(folder / p).read_bytes() for p in (modified, added)])
  np.testing.assert_allclose([vectors[modified], vectors[added]], reference, atol=1e-5)
  assert len(os.listdir(index)) == 1 + 2 * len(after.shards)  # the replaced shards are deleted
  with pytest.raises(ValueError, match='stores float32; pass --dtype=float32'):
    indexer.index_folder(searcher.model, str(folder), index, dtype='float16')


@pytest.mark.parametrize('shards, k, queries', [([5], 10, 3), ([100, 37, 1], 10, 5), ([3000, 9000], 7, 700)])
def test_top_k_is_exact_over_shards_chunks_and_devices(shards, k, queries, monkeypatch):
  monkeypatch.setattr(topk, 'BLOCK_ROWS', 4096)  # several blocks per shard
  rng = np.random.default_rng(0)
  gallery = [rng.standard_normal((rows, 8)).astype(np.float32) for rows in shards]
  query_vectors = rng.standard_normal((queries, 8)).astype(np.float32)
  scores, rows = topk.top_k(query_vectors, gallery, k, query_chunk=256)
  similarity = query_vectors @ np.concatenate(gallery).T
  expected = np.argsort(-similarity, axis=1, kind='stable')[:, :k]
  np.testing.assert_array_equal(rows, expected)
  np.testing.assert_allclose(scores, np.take_along_axis(similarity, expected, 1), atol=1e-5)
  half_scores, half_rows = topk.top_k(query_vectors, [g.astype(np.float16) for g in gallery], k)
  assert half_rows.shape == expected.shape and half_scores.dtype == np.float32


def _image(mode: str) -> Image.Image:
  rgb = np.random.default_rng(0).integers(0, 256, (24, 12, 3), np.uint8)
  return Image.fromarray(rgb).convert(mode)


@pytest.mark.parametrize('mode, file_format, native', [
    ('RGB', 'PNG', True), ('RGBA', 'PNG', True), ('L', 'PNG', True), ('P', 'PNG', True), ('RGB', 'JPEG', True),
    ('L', 'JPEG', True), ('CMYK', 'JPEG', False), ('RGB', 'BMP', False), ('RGB', 'WEBP', False)])
def test_model_bytes_decode_as_pil_shows_the_image(mode, file_format, native):
  buffer = io.BytesIO()
  _image(mode).save(buffer, format=file_format, **({'lossless': True} if file_format == 'WEBP' else {}))
  data = buffer.getvalue()
  converted = images.model_bytes(data)
  assert (converted == data) == native
  with Image.open(io.BytesIO(data)) as original:
    shown = np.asarray(original.convert('RGB'))
  decoded = tf.io.decode_image(converted, channels=3, expand_animations=False).numpy()
  if file_format == 'JPEG' and mode != 'CMYK':  # TF's and PIL's JPEG decoders round chroma differently
    assert np.abs(decoded.astype(int) - shown).mean() < 1.5
  else:
    np.testing.assert_array_equal(decoded, shown)


def test_model_bytes_turn_exif_rotated_images_upright():
  buffer = io.BytesIO()
  exif = Image.Exif()
  exif[0x0112] = 6  # rotated: the viewer turns it 90 degrees clockwise
  _image('RGB').save(buffer, format='PNG', exif=exif)
  decoded = tf.io.decode_image(images.model_bytes(buffer.getvalue()), channels=3).numpy()
  assert decoded.shape == (12, 24, 3)
  np.testing.assert_array_equal(decoded, np.rot90(np.asarray(_image('RGB')), k=-1))


@pytest.fixture(scope='module')
def web(searcher):
  """The page served from a thread of this process on a free localhost port."""
  web_server = server.make_server(searcher, '127.0.0.1', 0)
  thread = threading.Thread(target=web_server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{web_server.server_address[1]}'
  web_server.shutdown()
  web_server.server_close()


def _request(url: str, body: bytes | None = None) -> tuple[int, bytes]:
  try:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method='POST' if body is not None else 'GET'),
                                timeout=60) as response:
      return response.status, response.read()
  except urllib.error.HTTPError as error:
    return error.code, error.read()


def test_server_answers_queries_and_refuses_bad_requests(web, gallery, searcher):
  path = searcher.paths[3]
  status, body = _request(f'{web}/api/search', json.dumps(
      {'image': base64.b64encode((gallery.folder / path).read_bytes()).decode(), 'top_k': 2}).encode())
  assert status == 200 and json.loads(body)['results'][0]['path'] == path
  status, body = _request(f'{web}/image?path={path}')
  assert status == 200 and body == (gallery.folder / path).read_bytes()
  secret = gallery.folder.parent / 'secret.txt'
  secret.write_text('not for the web')
  for url in ('/image?path=../secret.txt', '/image?path=%2E%2E%2Fsecret.txt', f'/image?path={secret}',
              '/image?path=bad/notes.jpg', '/../secret.txt', '/image'):
    status, body = _request(web + url)
    assert status in (400, 404), url
    assert b'not for the web' not in body
  for body in (b'not json', b'[1]', b'{}', b'{"text": "  "}', b'{"text": "a", "top_k": 0}', b'{"image": "%%%"}',
               b'{"image": "aGVsbG8="}', b'{"text": 3}', b'{"text": "a", "extra": 1}'):
    status, answer = _request(f'{web}/api/search', body)
    assert 400 <= status < 500, body
    assert set(json.loads(answer)) == {'error'}


@pytest.mark.skipif(not os.path.exists(CHROMEDRIVER), reason=f'needs Debian chromium and chromium-driver '
                    f'({CHROMIUM}, {CHROMEDRIVER})')
def test_page_in_headless_chromium(web, gallery, searcher, tmp_path):
  from selenium import webdriver  # pylint: disable=g-import-not-at-top  (browser test only)
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               f'--user-data-dir={tmp_path / "profile"}'):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  try:
    driver.get(web + '/')
    text = gallery.captions[0]
    driver.find_element(By.ID, 'text').send_keys(text)
    driver.find_element(By.ID, 'search').click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, '.result'))
    shown = driver.find_elements(By.CSS_SELECTOR, '.result')
    expected = searcher.query(text=text, top_k=10)
    assert [element.get_attribute('data-path') for element in shown] == [r.path for r in expected]
    assert [float(element.get_attribute('data-score')) for element in shown] == pytest.approx(
        [r.score for r in expected], abs=1e-5)
    assert 'answered in' in driver.find_element(By.ID, 'status').text
    WebDriverWait(driver, 30).until(lambda d: all(
        d.execute_script('return arguments[0].complete && arguments[0].naturalWidth > 0', image)
        for image in d.find_elements(By.CSS_SELECTOR, '.result img')))
    driver.find_element(By.ID, 'text').clear()
    driver.find_element(By.ID, 'search').click()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, 'error').text)
    assert 'needs "text", "image" or both' in driver.find_element(By.ID, 'error').text
  finally:
    driver.quit()
