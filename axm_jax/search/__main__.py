"""Command line: person search with a trained run on a folder of your own images.

  python -m axm_jax.search index --workdir=RUN --images=DIR --index=INDEX [--checkpoint=best|latest|STEP]
                                 [--dtype=float32|float16]
  python -m axm_jax.search query --index=INDEX (--text="..." | --image=PATH | both | --queries=FILE)
                                 [--top_k=10] [--json] [--picture=OUT.png]
  python -m axm_jax.search serve --index=INDEX [--host=127.0.0.1] [--port=8080]

A missing index or run, an unreadable query image, an empty sentence or a model that did not embed the index
stops the command with a one-line error and exit status 2.
"""
import json
import sys
from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from axm_jax import checkpointing
from axm_jax import cli
from axm_jax.search import embed
from axm_jax.search import indexer
from axm_jax.search import picture
from axm_jax.search import searcher as searcher_lib
from axm_jax.search import server
from axm_jax.search import store

COMMANDS = ('index', 'query', 'serve')

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; only its __main__ block defines them, so the module imports with any other."""
  flags.DEFINE_string('workdir', None, 'index: the trained run. query/serve: by default the run that embedded the '
                      'index; another path must hold that same model.')
  flags.DEFINE_string('images', None, 'index: folder of images, searched recursively.')
  flags.DEFINE_string('index', None, 'Index directory.')
  flags.DEFINE_string('checkpoint', 'best', "index: 'best', 'latest' or a step number.")
  flags.DEFINE_enum('dtype', 'float32', list(store.DTYPES), 'index: stored embedding dtype of a new index.')
  flags.DEFINE_string('text', None, 'query: a sentence describing the person.')
  flags.DEFINE_string('image', None, 'query: an image file of the person (with --text: image+text query).')
  flags.DEFINE_string('queries', None, 'query: a file of sentences, one per line; prints JSON lines.')
  flags.DEFINE_integer('top_k', 10, 'query: results per query.', lower_bound=1)
  flags.DEFINE_bool('json', False, 'query: print JSON instead of a table.')
  flags.DEFINE_string('picture', None, 'query: write a contact sheet PNG of the query and its results.')
  flags.DEFINE_string('host', '127.0.0.1', 'serve: address to bind (localhost unless told otherwise).')
  flags.DEFINE_integer('port', 8080, 'serve: port.')


def run_index() -> None:
  _require('index', 'workdir', 'images', 'index')
  model = embed.load_model(FLAGS.workdir, FLAGS.checkpoint)
  report = indexer.index_folder(model, FLAGS.images, FLAGS.index, FLAGS.dtype,
                                on_skip=lambda path, reason: print(f'skipped {path}: {reason}', file=sys.stderr))
  print(f'{FLAGS.index}: {report.indexed} images ({report.embedded} embedded, {report.unchanged} unchanged, '
        f'{report.deleted} dropped as deleted or modified, {len(report.skipped)} skipped), model step {model.step}')


def run_query() -> None:
  _require('query', 'index')
  if FLAGS.queries is not None and (FLAGS.text is not None or FLAGS.image is not None or FLAGS.picture):
    raise ValueError('--queries answers sentences from a file; it takes no --text, --image or --picture')
  if FLAGS.queries is None and FLAGS.text is None and FLAGS.image is None:
    raise ValueError('query needs --text, --image (or both) or --queries')
  texts = searcher_lib.read_queries(FLAGS.queries) if FLAGS.queries is not None else None
  image = searcher_lib.read_query_image(FLAGS.image) if FLAGS.image is not None else None
  searcher = searcher_lib.Searcher(FLAGS.index, FLAGS.workdir)
  if texts is not None:
    for text, results in zip(texts, searcher.text_queries(texts, FLAGS.top_k)):
      print(json.dumps(searcher_lib.answer_json({'text': text}, results)))
    return
  results = searcher.query(FLAGS.text, image, FLAGS.top_k)
  query = {key: value for key, value in (('text', FLAGS.text), ('image', FLAGS.image)) if value is not None}
  if FLAGS.json:
    print(json.dumps(searcher_lib.answer_json(query, results)))
  else:
    print(searcher_lib.format_table(results))
  if FLAGS.picture:
    with tf.io.gfile.GFile(FLAGS.picture, 'wb') as f:
      f.write(picture.contact_sheet_png(results, [searcher.image_path(r.path) for r in results], FLAGS.text, image))


def run_serve() -> None:
  _require('serve', 'index')
  searcher = searcher_lib.Searcher(FLAGS.index, FLAGS.workdir)
  searcher.warm_up()
  web = server.make_server(searcher, FLAGS.host, FLAGS.port)
  host, port = web.server_address[:2]
  print(f'serving {len(searcher.paths)} images of {searcher.index.images} on http://{host}:{port}/ (Ctrl-C stops)',
        flush=True)
  try:
    web.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    web.server_close()


def _require(command: str, *names: str) -> None:
  missing = [f'--{name}' for name in names if FLAGS[name].value is None]
  if missing:
    raise ValueError(f'{command} needs {" and ".join(missing)}')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f'expected one command, {" | ".join(COMMANDS)}; got {list(argv[1:])}', exitcode=2)
  try:
    {'index': run_index, 'query': run_query, 'serve': run_serve}[argv[1]]()
  except (ValueError, FileNotFoundError, checkpointing.CheckpointError) as error:
    logging.flush()
    print(f'axm_jax.search {argv[1]}: error: {error}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
