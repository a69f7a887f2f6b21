"""The shared process set-up of the commands (axm_jax/cli.py) and the one config loader (axm_jax/config_files.py)."""
import importlib
import os
import subprocess
import sys

from absl import flags
import pytest

from axm_jax import config_files
from conftest import REPO, SMOKE_CONFIG

ECHO_CONFIG = '''import ml_collections


def get_config(argument='none'):
  return ml_collections.ConfigDict({'argument': argument})
'''


def test_load_config_passes_the_text_after_the_first_colon_to_get_config(tmp_path):
  path = tmp_path / 'echo.py'
  path.write_text(ECHO_CONFIG)
  assert config_files.load_config(str(path)).argument == 'none'
  assert config_files.load_config(f'{path}:').argument == ''
  assert config_files.load_config(f'{path}:tpu').argument == 'tpu'
  assert config_files.load_config(f'{path}:a:b').argument == 'a:b'


def test_a_relative_path_is_looked_up_in_the_current_directory_then_in_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert config_files.load_config(SMOKE_CONFIG).model.width == 0.0625
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'synthetic.py').write_text(ECHO_CONFIG)
  assert config_files.load_config(SMOKE_CONFIG).argument == 'smoke'


def test_a_missing_file_and_a_file_without_get_config_are_named(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(config_files.ConfigFileError) as missing:
    config_files.load_config('configs/nope.py:smoke')
  assert str(missing.value) == (
      f"config file 'configs/nope.py' not found: expected a Python file defining get_config() at "
      f'{tmp_path}/configs/nope.py or {REPO}/configs/nope.py')
  (tmp_path / 'empty.py').write_text('CONFIG = {}\n')
  with pytest.raises(config_files.ConfigFileError) as empty:
    config_files.load_config('empty.py')
  assert str(empty.value) == (
      f'config file {tmp_path}/empty.py defines no get_config(); expected a function get_config() that returns '
      'the config (called as get_config(ARGUMENT) for PATH:ARGUMENT)')


def test_the_commands_import_together_and_define_no_flags_on_import():
  for module in ('axm_jax.main', 'axm_jax.error_analysis', 'axm_jax.search.__main__', 'axm_jax.data.validate',
                 'axm_jax.models.pretrained', 'axm_jax.data.sample_sheet'):
    importlib.import_module(module)
  assert not {'workdir', 'config', 'index', 'dataset', 'input', 'out'} & set(flags.FLAGS)


def _command(module: str, *args: str, cwd: str, **env: str) -> subprocess.CompletedProcess:
  process_env = {key: value for key, value in os.environ.items() if key != 'JAX_COMPILATION_CACHE_DIR'}
  process_env.update(PYTHONPATH=str(REPO), **env)
  return subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, env=process_env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_search_gets_the_persistent_compilation_cache(tmp_path):
  result = _command('axm_jax.search', 'query', f'--index={tmp_path}/none', '--text=a man', '--verbosity=1',
                    cwd=str(tmp_path), HOME=str(tmp_path))
  assert result.returncode == 2
  lines = result.stderr.splitlines()
  assert [line.split('] ', 1)[1] for line in lines if 'cli.py' in line] == [
      f'persistent compilation cache: {tmp_path}/.cache/axm_jax/xla']


def test_an_unknown_config_field_is_named_in_one_line(tmp_path):
  result = _command('axm_jax.main', f'--config={SMOKE_CONFIG}', f'--workdir={tmp_path}/run',
                    '--config.data.colour=red', cwd=str(tmp_path))
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1] == (
      "FATAL unknown config field 'colour' in --config.data.colour=red: every field must exist in the get_config() "
      'of --config.')
  assert not (tmp_path / 'run').exists()
