"""The one loader of config files: `--config=PATH[:ARGUMENT]` (through cli.define_config_flag) and code alike."""
import importlib.machinery
import importlib.util
import os
import pathlib

import ml_collections

REPO = pathlib.Path(__file__).resolve().parents[1]


class ConfigFileError(ValueError):
  """A config file that is missing or defines no get_config()."""


def load_config(spec: str) -> ml_collections.ConfigDict:
  """PATH's get_config(ARGUMENT) for spec 'PATH:ARGUMENT', get_config() for 'PATH' (ml_collections' `--config=`).

  A relative PATH is looked up in the current directory first, then in the repository root (the directory that
  holds axm_jax/), so 'configs/synthetic.py:smoke' loads from tests, benchmarks and package code run anywhere.
  The file runs as a fresh module on every call; the config comes back unlocked.

  Raises:
    ConfigFileError: naming the file, when it is missing or defines no get_config.
  """
  path, *argument = spec.split(':', 1)
  file = _find(path)
  name = f'_axm_config_{file.stem}'
  module_spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, str(file)))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise ConfigFileError(f'config file {file} defines no get_config(); expected a function get_config() that '
                          'returns the config (called as get_config(ARGUMENT) for PATH:ARGUMENT)')
  return get_config(*argument)


def _find(path: str) -> pathlib.Path:
  """`path` itself if it is a file, else a relative `path` under the repository root."""
  candidates = [pathlib.Path(path).absolute()]
  if not os.path.isabs(path):
    candidates.append(REPO / path)
  for candidate in candidates:
    if candidate.is_file():
      return candidate
  raise ConfigFileError(f'config file {path!r} not found: expected a Python file defining get_config() at '
                        f'{" or ".join(str(candidate) for candidate in candidates)}')
