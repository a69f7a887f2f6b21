"""`python -m axm_jax.data.synthetic --config=default` prints a builder config's statistics and oracle R@1 per split."""
from collections.abc import Sequence

from absl import app, flags

from axm_jax.data.synthetic.builder import SynthPedes
from axm_jax.data.synthetic.identities import SPLITS, make_identities
from axm_jax.data.synthetic.oracle import near_duplicate_pairs, oracle_text_to_image_r1
from axm_jax.data.synthetic.records import generate_records

_CONFIG = flags.DEFINE_enum('config', 'default', [config.name for config in SynthPedes.BUILDER_CONFIGS],
                            'SynthPedes builder config.')


def _print_statistics(argv: Sequence[str]) -> None:
  del argv
  config = next(config for config in SynthPedes.BUILDER_CONFIGS if config.name == _CONFIG.value)
  identities = make_identities(config.size, config.seed)
  for split in SPLITS:
    records = generate_records(config.size, config.seed, split)
    r1, chance = oracle_text_to_image_r1(records)
    captions = sum(len(record.captions) for record in records)
    print(f'{split}: {len(identities[split])} identities, {len(records)} images, {captions} captions, '
          f'{near_duplicate_pairs(identities[split])} near-duplicate pairs (<= 2 labels apart), '
          f'oracle t2i R@1 {100 * r1:.1f}%, chance {100 * chance:.2f}%')


if __name__ == '__main__':
  app.run(_print_statistics)
