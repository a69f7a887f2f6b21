"""Runs variants of a config over several seeds with the main command and prints their mean and spread.

  python -m benchmarks.seed_grid --root=grids/synthetic --variants=axm_net,dual_encoder --seeds=0,1,2
  python -m benchmarks.seed_grid --root=grids/cuhk_layout --variants=axm_net,dual_encoder --seeds=0,1,2 \
      -- --config.data.name=cuhk_pedes --config.data.manual_dir=DIR --config.data.data_dir=DIR/tfds

Each (variant, seed) is one `python -m axm_jax.main` run in ROOT/VARIANT/seed_SEED (its log beside it, .log). A run
whose metrics.jsonl has its test row is read, not rerun, so a grid that was stopped continues where it stopped
(an unfinished run resumes from its checkpoint). Flags after `--` go to every run.

Printed, one markdown row per variant: val t2i R@1 at each evaluation, the best val, and the test row of the best
val checkpoint (t2i R@1, t2i mAP, i2t R@1) as mean ± sample standard deviation [min, max] over the seeds; then the
median training steps/s and the mean wall time per run. With --paired_with=VARIANT, one more column: the per-seed
difference of test t2i R@1 to that variant's run with the same seed (same data order and initialisation draw), as
mean [min, max]. ROOT/val_curves.png draws the val curves with their range.
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from axm_jax import plots  # pylint: disable=g-import-not-at-top,wrong-import-position

# Each variant is the base config plus these flags (the rungs between AXM-Net and the plain dual encoder).
VARIANTS = {
    'axm_net': (),
    'dual_encoder': ('--config.model.architecture=dual_encoder',),
    'axm_net_plain_visual': ('--config.model.plain_branch=visual', '--config.model.part_attention=False'),
    'axm_net_plain_text': ('--config.model.plain_branch=text', '--config.model.text_attention=False'),
    'axm_net_gate_per_modality': ('--config.model.share_gate=False',),
    'axm_net_no_part_attention': ('--config.model.part_attention=False',),
    'axm_net_no_text_attention': ('--config.model.text_attention=False',),
    'axm_net_text_attention_zero_init': ('--config.model.text_attention_zero_init=True',),
    'axm_net_unit_gamma': ('--config.model.zero_gamma=False',),
    'axm_net_width_0.125': ('--config.model.width=0.125',),
    'axm_net_width_0.5': ('--config.model.width=0.5',),
    'axm_net_128x64': ('--config.data.image_size=(128,64)',),
    'dual_encoder_128x64': ('--config.model.architecture=dual_encoder', '--config.data.image_size=(128,64)'),
    'axm_net_no_affinity': ('--config.loss.affinity_weight=0',),
    'axm_net_no_triplet_warmup': ('--config.loss.triplet_warmup_steps=0',),
}
STEPS_PER_S = re.compile(r'\| ([0-9.]+) steps/s \|')
TEST_COLUMNS = (('t2i_r1', 'test t2i R@1'), ('t2i_map', 'test t2i mAP'), ('i2t_r1', 'test i2t R@1'))


def run_one(config: str, workdir: pathlib.Path, seed: int, flags: list[str]) -> None:
  """Runs (or resumes) one training run unless its test row exists; records its wall time."""
  if _test_row(workdir) is not None:
    return
  workdir.parent.mkdir(parents=True, exist_ok=True)
  command = [sys.executable, '-m', 'axm_jax.main', f'--config={config}', f'--workdir={workdir}',
             f'--config.train.seed={seed}', *flags]
  print(' '.join(command), flush=True)
  start = time.monotonic()
  with open(f'{workdir}.log', 'a') as log:
    result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
  if result.returncode:
    raise SystemExit(f'{workdir} failed with status {result.returncode}; see {workdir}.log')
  pathlib.Path(f'{workdir}.wall.json').write_text(json.dumps({'seconds': time.monotonic() - start}))


def _rows(workdir: pathlib.Path) -> list[dict]:
  path = workdir / 'metrics.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _test_row(workdir: pathlib.Path) -> dict | None:
  return next((row for row in _rows(workdir) if row['split'] == 'test'), None)


def spread(values: list[float]) -> str:
  """'mean ± sd [min, max]' (sd of the sample; just the value for one seed)."""
  if len(values) == 1:
    return f'{values[0]:.2f}'
  return (f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} '
          f'[{min(values):.2f}, {max(values):.2f}]')


def summarize(workdirs: list[pathlib.Path]) -> dict:
  """Per-seed val curves, best val and test metrics, steps/s and wall seconds of one variant's runs."""
  curves, best_val, test, rates, walls = {}, [], {key: [] for key, _ in TEST_COLUMNS}, [], []
  for workdir in workdirs:
    val = [row for row in _rows(workdir) if row['split'] == 'val']
    for row in val:
      curves.setdefault(row['step'], []).append(row['t2i_r1'])
    best_val.append(max(row['t2i_r1'] for row in val))
    test_row = _test_row(workdir)
    for key, _ in TEST_COLUMNS:
      test[key].append(test_row[key])
    rates += [float(rate) for rate in STEPS_PER_S.findall(pathlib.Path(f'{workdir}.log').read_text())]
    wall = pathlib.Path(f'{workdir}.wall.json')
    if wall.exists():
      walls.append(json.loads(wall.read_text())['seconds'])
  return {'curves': dict(sorted(curves.items())), 'best_val': best_val, 'test': test,
          'steps_per_s': statistics.median(rates) if rates else float('nan'),
          'wall_s': statistics.mean(walls) if walls else float('nan'), 'seeds': len(workdirs)}


def paired_difference(workdirs: list[pathlib.Path], baseline: list[pathlib.Path]) -> str:
  """Test t2i R@1 minus the baseline's over the seeds both finished, as 'mean [min, max]' ('-' if none)."""
  differences = [run['t2i_r1'] - base['t2i_r1'] for run, base in
                 ((_test_row(workdir), _test_row(other)) for workdir, other in zip(workdirs, baseline))
                 if run is not None and base is not None]
  if not differences:
    return '-'
  return f'{statistics.mean(differences):+.2f} [{min(differences):+.2f}, {max(differences):+.2f}]'


def table(summaries: dict[str, dict], paired: dict[str, str] | None = None) -> str:
  """The markdown table of every variant; `paired` adds a column of paired_difference per variant."""
  steps = sorted({step for summary in summaries.values() for step in summary['curves']})
  header = ['variant', 'seeds', *[f'val t2i R@1 @{step}' for step in steps], 'best val t2i R@1',
            *[title for _, title in TEST_COLUMNS], 'steps/s', 'wall', *(['paired, test t2i R@1'] if paired else [])]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, summary in summaries.items():
    cells = [name, str(summary['seeds'])]
    cells += [spread(summary['curves'][step]) if step in summary['curves'] else '-' for step in steps]
    cells += [spread(summary['best_val']), *[spread(summary['test'][key]) for key, _ in TEST_COLUMNS]]
    cells += [f'{summary["steps_per_s"]:.2f}', time.strftime('%M min %S s', time.gmtime(summary['wall_s']))
              if np.isfinite(summary['wall_s']) else '-']
    cells += [paired[name]] if paired else []
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def curves_picture(summaries: dict[str, dict], title: str) -> bytes:
  """Val t2i R@1 against steps: the mean over seeds, the band between the lowest and highest seed."""
  curves = {}
  for name, summary in summaries.items():
    values = [summary['curves'][step] for step in summary['curves']]
    curves[name] = plots.Band(steps=np.array(list(summary['curves'])), mean=np.array([np.mean(v) for v in values]),
                              low=np.array([min(v) for v in values]), high=np.array([max(v) for v in values]))
  return plots.bands_png(curves, title, xlabel='step', ylabel='val t2i R@1 (%)')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--root', required=True, help='directory of the grid: ROOT/VARIANT/seed_SEED')
  parser.add_argument('--config', default='configs/synthetic.py', help='the base config (PATH[:ARG])')
  parser.add_argument('--variants', default='axm_net,dual_encoder', help=f'comma-separated, of {list(VARIANTS)}')
  parser.add_argument('--seeds', default='0,1,2', help='comma-separated config.train.seed values')
  parser.add_argument('--report_only', action='store_true', help='read the finished runs, start none')
  parser.add_argument('--paired_with', default='', help='a variant run in ROOT with the same seeds (not started)')
  parser.add_argument('flags', nargs='*', help='after --: flags for every run')
  args = parser.parse_args()
  variants = args.variants.split(',')
  unknown = sorted({*variants, *([args.paired_with] if args.paired_with else [])} - set(VARIANTS))
  if unknown:
    parser.error(f'unknown variants {unknown}; expected some of {list(VARIANTS)}')
  seeds = [int(seed) for seed in args.seeds.split(',')]
  root = pathlib.Path(args.root).resolve()
  workdirs = {name: [root / name / f'seed_{seed}' for seed in seeds] for name in variants}
  if not args.report_only:
    for seed_index, seed in enumerate(seeds):  # seed by seed, so that a stopped grid has every variant's first seeds
      for name in variants:
        run_one(args.config, workdirs[name][seed_index], seed, [*VARIANTS[name], *args.flags])
  finished = {name: [w for w in dirs if _test_row(w) is not None] for name, dirs in workdirs.items()}
  summaries = {name: summarize(dirs) for name, dirs in finished.items() if dirs}
  baseline = [root / args.paired_with / f'seed_{seed}' for seed in seeds]
  paired = {name: '-' if name == args.paired_with else paired_difference(workdirs[name], baseline)
            for name in summaries} if args.paired_with else None
  print(f'{args.config} {" ".join(args.flags)}; mean ± sd [min, max] over seeds, percent')
  print(table(summaries, paired))
  picture = root / 'val_curves.png'
  picture.write_bytes(curves_picture(summaries, f'{os.path.basename(args.config)}: val t2i R@1 over seeds'))
  print(f'wrote {picture}')


if __name__ == '__main__':
  main()
