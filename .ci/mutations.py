"""Puts each deliberate bug of docs/mutations.md into the code, runs the tests that must catch it, and restores the
file: a mutation is caught when at least one of them fails.

  .venv/bin/python .ci/mutations.py            # every row (about an hour on a 2-core CPU)
  .venv/bin/python .ci/mutations.py 1 8 26     # some rows

Run it on a clean working tree: each file is restored byte for byte from the copy read before its mutation, also
when the run is interrupted. Prints one line per row and exits non-zero if a mutation was not caught.
"""
import dataclasses
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
  row: str  # the row of docs/mutations.md
  file: str
  old: str  # must occur exactly once in `file`
  new: str
  tests: tuple[str, ...]  # pytest arguments: the tests that must catch it

MULTI_DEVICE = ('tests/test_multi_device.py',)
MULTI_DEVICE_STEP = ('tests/test_multi_device.py', '-k', 'equal_one_device')
METRICS = ('tests/test_metrics.py',)
LOSSES = ('tests/test_losses.py',)
MUTATIONS = (
    Mutation('1', 'axm_jax/train_step.py', 'jax.lax.pmean(grads, AXIS)', 'jax.lax.psum(grads, AXIS)',
             MULTI_DEVICE_STEP),
    Mutation('2', 'axm_jax/train_step.py', 'return jax.lax.pmean(grads, AXIS), terms', 'return grads, terms',
             MULTI_DEVICE_STEP),
    Mutation('3', 'axm_jax/train_step.py', '          optax.global_norm(grads))',
             '          optax.global_norm(jax.tree.map(lambda g: jax.lax.psum(g, AXIS), grads)))',
             MULTI_DEVICE_STEP),
    Mutation('4', 'axm_jax/models/blocks.py', 'sums = jax.lax.psum(sums, self.axis_name)', 'sums = sums',
             MULTI_DEVICE_STEP),
    Mutation('5', 'axm_jax/losses.py', 'return compute_losses(gathered, all_labels, loss_config, step)',
             'return compute_losses(outputs, labels, loss_config, step)', MULTI_DEVICE_STEP),
    Mutation('6', 'axm_jax/train_step.py', "loss_config, AXIS, state.step)", 'loss_config, AXIS, None)',
             MULTI_DEVICE),
    Mutation('7', 'axm_jax/train_step.py', 'TrainState(step=state.step + 1,', 'TrainState(step=state.step + 2,',
             MULTI_DEVICE),
    Mutation('8', 'axm_jax/metrics.py', 'first_hit_ranks[:, None] <= np.arange', 'first_hit_ranks[:, None] < np.arange',
             METRICS),
    Mutation('9', 'axm_jax/metrics.py', 'hits_so_far / ranks, starts', 'hits_so_far / (ranks + 1), starts', METRICS),
    Mutation('10', 'axm_jax/metrics.py', 'counts / ranks[starts + counts - 1]', 'counts / ranks[starts]', METRICS),
    Mutation('11', 'axm_jax/metrics.py', '(column[None, :] < columns[:, None])', '(column[None, :] > columns[:, None])',
             METRICS),
    Mutation('12', 'axm_jax/metrics.py', '    chunk[query_rows[same_camera], columns[same_camera]] = -np.inf\n', '',
             METRICS),
    Mutation('13', 'axm_jax/metrics.py', '    chunk[:, unknown_gallery] = -np.inf\n', '', METRICS),
    Mutation('14', 'axm_jax/data/tokenizer.py', '[BOS_ID] + text_pieces[:length - 2] + [EOS_ID]',
             '([BOS_ID] + text_pieces + [EOS_ID])[:length]', ('tests/test_tokenizer.py',)),
    Mutation('15', 'axm_jax/data/tokenizer.py', 'return ids, ids != PAD_ID', 'return ids, np.ones_like(ids, bool)',
             ('tests/test_tokenizer.py',)),
    Mutation('16', 'axm_jax/losses.py',
             'optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)',
             'jax.nn.one_hot(labels, logits.shape[-1])', LOSSES),
    Mutation('17', 'axm_jax/losses.py', 'logits.shape[-1]), label_smoothing)',
             'logits.shape[-1]), 2 * label_smoothing)', LOSSES),
    Mutation('18', 'axm_jax/losses.py', 'jax.nn.relu(margin + hardest_positive',
             'jax.nn.relu(-margin + hardest_positive', LOSSES),
    Mutation('19', 'axm_jax/losses.py', 'valid = same.any(axis=1) & (~same).any(axis=1)',
             'valid = jnp.ones(same.shape[0], bool)', LOSSES),
    Mutation('20', 'axm_jax/losses.py', '  matches = (labels[:, None] == labels[None, :]).astype(jnp.float32)\n'
             '  if form', '  matches = jnp.eye(labels.shape[0], dtype=jnp.float32)\n  if form', LOSSES),
    Mutation('21', 'axm_jax/losses.py', 'text_to_image = jax.nn.log_softmax(logits, axis=0)',
             'text_to_image = jax.nn.log_softmax(logits, axis=1)', LOSSES),
    Mutation('22', 'axm_jax/models/blocks.py', 'count = jnp.maximum(mask.sum(axis=-1, keepdims=True), 1)',
             'count = jnp.full(mask.shape[:-1] + (1,), mask.shape[-1])',
             ('tests/test_blocks.py', '-k', 'global_average_pool')),
    Mutation('23', 'axm_jax/models/axm_net.py',
             'jnp.where(mask, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)', 'logits.astype(jnp.float32)',
             ('tests/test_axm_net.py', '-k', 'padding')),
    Mutation('24', 'axm_jax/models/blocks.py', 'weighted, count = values * weights, weights.sum()',
             'weighted, count = values * weights, jnp.float32(weights.size)',
             ('tests/test_blocks.py', '-k', 'batch_norm')),
    Mutation('25', 'axm_jax/cli.py', 'sys.exit(128 + stopped.signal_number)', 'sys.exit(0)',
             ('tests/test_faults.py', '-k', 'sigterm')),
    Mutation('26', 'axm_jax/evaluate.py', "      't2i': metrics.retrieval_statistics(",
             "      'i2t': metrics.retrieval_statistics(", ('tests/test_evaluate.py',)),
    Mutation('27', 'axm_jax/train.py', 'TrainState(step=jnp.asarray(step, jnp.int32)',
             'TrainState(step=jnp.asarray(step + 1, jnp.int32)', ('tests/test_faults.py', '-k', 'truncated')),
    Mutation('27b', 'axm_jax/train.py', 'start_step = step = int(state.step)',
             'start_step = step = int(state.step) + 1', ('tests/test_faults.py', '-k', 'truncated')),
)


def run(mutation: Mutation) -> tuple[bool, str]:
  """(caught, pytest's last line) with `mutation` applied; the file is restored afterwards."""
  path = REPO / mutation.file
  original = path.read_bytes()
  text = original.decode()
  if text.count(mutation.old) != 1:
    raise ValueError(f'row {mutation.row}: expected the text to mutate once in {mutation.file}, found it '
                     f'{text.count(mutation.old)} times: {mutation.old!r}')
  try:
    path.write_text(text.replace(mutation.old, mutation.new))
    result = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *mutation.tests],
                            cwd=REPO, capture_output=True, text=True, check=False)
  finally:
    path.write_bytes(original)
  lines = result.stdout.strip().splitlines()
  return result.returncode == 1, lines[-1] if lines else result.stderr.strip()[-200:]


def main(rows: list[str]) -> int:
  chosen = [m for m in MUTATIONS if not rows or m.row in rows]
  missed = []
  for mutation in chosen:
    start = time.monotonic()
    caught, last_line = run(mutation)
    print(f'row {mutation.row:>3}: {"caught" if caught else "NOT CAUGHT"} in {time.monotonic() - start:5.0f} s '
          f'({" ".join(mutation.tests)}: {last_line})', flush=True)
    if not caught:
      missed.append(mutation.row)
  print(f'{len(chosen) - len(missed)} of {len(chosen)} mutations caught' + (f'; missed: {missed}' if missed else ''))
  return 1 if missed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
