"""The local web page: a sentence box and an optional image upload, answered with the top-K thumbnails.

  GET  /                 the page
  POST /api/search       JSON {"text": str, "image": base64 file bytes, "top_k": int} (text and/or image)
                         -> {"query": {...}, "results": [{"rank", "path", "score"}], "seconds": float}
  GET  /image?path=P     the indexed file P (P must be one of the index's own paths)

The model is loaded once (by the Searcher); queries are answered one at a time. A malformed request gets a 4xx
status with a one-line JSON error, never a traceback.
"""
import base64
import binascii
import html
import http
import http.server
import json
import mimetypes
import threading
import time
import urllib.parse

from absl import logging

from axm_jax.search import searcher as searcher_lib

MAX_BODY_BYTES = 32 << 20
MAX_TOP_K = 100

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>axm_jax person search</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
#results {{ display: flex; flex-wrap: wrap; gap: 0.8em; margin-top: 1em; }}
.result {{ width: 9em; font-size: 0.8em; word-break: break-all; }}
.result img {{ height: 12em; max-width: 9em; object-fit: contain; border: 1px solid #ccc; }}
#error {{ color: #b00; }}
</style></head><body>
<h1>Person search</h1>
<p>{count} images of <code>{folder}</code>, model of <code>{workdir}</code> at step {step}.</p>
<form id="form">
<input id="text" type="text" size="80" placeholder="a woman in a red coat and black trousers ...">
<input id="image" type="file" accept="image/*">
top <input id="top_k" type="number" value="10" min="1" max="{max_top_k}" style="width: 4em">
<button id="search" type="submit">Search</button>
</form>
<p id="status"></p><p id="error"></p>
<div id="results"></div>
<script>
const form = document.getElementById('form');
function fileBase64(file) {{
  return new Promise((resolve, reject) => {{
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(',')[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  }});
}}
form.addEventListener('submit', async (event) => {{
  event.preventDefault();
  const body = {{top_k: Number(document.getElementById('top_k').value)}};
  const text = document.getElementById('text').value;
  if (text.trim()) body.text = text;
  const file = document.getElementById('image').files[0];
  if (file) body.image = await fileBase64(file);
  document.getElementById('error').textContent = '';
  document.getElementById('status').textContent = 'searching ...';
  const results = document.getElementById('results');
  results.replaceChildren();
  const started = performance.now();
  const response = await fetch('/api/search', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                                                body: JSON.stringify(body)}});
  const answer = await response.json();
  if (!response.ok) {{
    document.getElementById('status').textContent = '';
    document.getElementById('error').textContent = answer.error;
    return;
  }}
  for (const result of answer.results) {{
    const item = document.createElement('div');
    item.className = 'result';
    item.dataset.rank = result.rank;
    item.dataset.path = result.path;
    item.dataset.score = result.score;
    const image = document.createElement('img');
    image.src = '/image?path=' + encodeURIComponent(result.path);
    image.alt = result.path;
    const label = document.createElement('div');
    label.textContent = result.rank + ': ' + result.score.toFixed(3) + ' ' + result.path;
    item.append(image, label);
    results.append(item);
  }}
  document.getElementById('status').textContent = answer.results.length + ' results, answered in ' +
      (1000 * answer.seconds).toFixed(0) + ' ms (' + (performance.now() - started).toFixed(0) + ' ms in the browser)';
}});
</script></body></html>
"""


class RequestError(Exception):
  """A malformed request: answered with `status` and the message."""

  def __init__(self, status: http.HTTPStatus, message: str):
    super().__init__(message)
    self.status = status


def make_server(searcher: searcher_lib.Searcher, host: str = '127.0.0.1',
                port: int = 8080) -> http.server.ThreadingHTTPServer:
  """An HTTP server answering with `searcher` (call serve_forever; port 0 picks a free port)."""
  lock = threading.Lock()
  page = _PAGE.format(count=len(searcher.paths), folder=html.escape(searcher.index.images),
                      workdir=html.escape(searcher.model.workdir), step=searcher.model.step,
                      max_top_k=MAX_TOP_K).encode()

  class Handler(http.server.BaseHTTPRequestHandler):
    """Routes GET / and /image, POST /api/search."""

    def do_GET(self):  # pylint: disable=invalid-name
      self._answer(self._get)

    def do_POST(self):  # pylint: disable=invalid-name
      self._answer(self._post)

    def _get(self) -> tuple[bytes, str]:
      url = urllib.parse.urlsplit(self.path)
      if url.path == '/':
        return page, 'text/html; charset=utf-8'
      if url.path == '/image':
        paths = urllib.parse.parse_qs(url.query).get('path', [])
        if len(paths) != 1:
          raise RequestError(http.HTTPStatus.BAD_REQUEST, '/image needs exactly one path= parameter')
        try:
          file = searcher.image_path(paths[0])
        except KeyError:
          raise RequestError(http.HTTPStatus.NOT_FOUND, f'{paths[0]!r} is not an indexed image') from None
        try:
          with open(file, 'rb') as f:
            return f.read(), mimetypes.guess_type(file)[0] or 'application/octet-stream'
        except OSError:
          raise RequestError(http.HTTPStatus.NOT_FOUND, f'{paths[0]!r} is no longer readable') from None
      raise RequestError(http.HTTPStatus.NOT_FOUND, f'no page {url.path!r}')

    def _post(self) -> tuple[bytes, str]:
      if urllib.parse.urlsplit(self.path).path != '/api/search':
        raise RequestError(http.HTTPStatus.NOT_FOUND, f'no endpoint {self.path!r}')
      request = _parse_request(self._body())
      started = time.perf_counter()
      with lock:
        try:
          results = searcher.query(request['text'], request['image'], request['top_k'])
        except ValueError as error:  # an empty sentence, an undecodable image
          raise RequestError(http.HTTPStatus.BAD_REQUEST, str(error)) from None
      query = {'text': request['text'], 'image': request['image'] is not None, 'top_k': request['top_k']}
      answer = searcher_lib.answer_json(query, results) | {'seconds': time.perf_counter() - started}
      return json.dumps(answer).encode(), 'application/json'

    def _body(self) -> bytes:
      try:
        length = int(self.headers.get('Content-Length', ''))
      except ValueError:
        raise RequestError(http.HTTPStatus.LENGTH_REQUIRED, 'a Content-Length header is required') from None
      if length < 0 or length > MAX_BODY_BYTES:
        raise RequestError(http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f'the request body must be at most {MAX_BODY_BYTES} bytes')
      return self.rfile.read(length)

    def _answer(self, route) -> None:
      try:
        body, content_type = route()
        status = http.HTTPStatus.OK
      except RequestError as error:
        status, content_type = error.status, 'application/json'
        body = json.dumps({'error': str(error)}).encode()
      except Exception:  # pylint: disable=broad-except  (logged here; the client gets no traceback)
        logging.exception('failed to answer %s %s', self.command, self.path)
        status, content_type = http.HTTPStatus.INTERNAL_SERVER_ERROR, 'application/json'
        body = json.dumps({'error': 'internal error; see the server log'}).encode()
      self.send_response(status)
      self.send_header('Content-Type', content_type)
      self.send_header('Content-Length', str(len(body)))
      self.end_headers()
      self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      logging.info('%s %s', self.address_string(), format % args)

  return http.server.ThreadingHTTPServer((host, port), Handler)


def _parse_request(body: bytes) -> dict:
  """{'text': str | None, 'image': bytes | None, 'top_k': int} from the JSON body; RequestError when malformed."""
  try:
    request = json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError):
    raise RequestError(http.HTTPStatus.BAD_REQUEST, 'the body must be a JSON object') from None
  if not isinstance(request, dict):
    raise RequestError(http.HTTPStatus.BAD_REQUEST, 'the body must be a JSON object')
  unknown = set(request) - {'text', 'image', 'top_k'}
  if unknown:
    raise RequestError(http.HTTPStatus.BAD_REQUEST, f'unknown fields {sorted(unknown)}; expected text, image, top_k')
  text, image, top_k = request.get('text'), request.get('image'), request.get('top_k', 10)
  if text is not None and not isinstance(text, str):
    raise RequestError(http.HTTPStatus.BAD_REQUEST, '"text" must be a string')
  if image is not None:
    try:
      image = base64.b64decode(image, validate=True) if isinstance(image, str) else None
    except binascii.Error:
      image = None
    if image is None:
      raise RequestError(http.HTTPStatus.BAD_REQUEST, '"image" must be the file\'s bytes in base64')
  if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
    raise RequestError(http.HTTPStatus.BAD_REQUEST, f'"top_k" must be an integer from 1 to {MAX_TOP_K}')
  if text is None and image is None:
    raise RequestError(http.HTTPStatus.BAD_REQUEST, 'a query needs "text", "image" or both')
  return {'text': text, 'image': image, 'top_k': top_k}
