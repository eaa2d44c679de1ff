"""Config files load with variants and dotted overrides; bad input is clear."""

import os

import pytest

from semcorr_jax import config_files
from semcorr_jax.errors import SemcorrError
from helpers import paths

SFNET = os.path.join(str(paths.REPO), 'configs',
                     'sfnet.py')


def test_variant_and_overrides():
  config = config_files.load(SFNET + ':quick', {'optimizer.lr': 0.5,
                                                'batch_size': 4})
  assert config.optimizer.lr == 0.5 and config.batch_size == 4
  assert config.data.source == 'embedded'
  assert config_files.load(SFNET + ':paper').data.source == 'voc2012'


def test_bad_input():
  with pytest.raises(SemcorrError, match='no such file'):
    config_files.load('/nonexistent/config.py:test')
  with pytest.raises(SemcorrError, match="no field 'optimizer.lrr'"):
    config_files.load(SFNET + ':test', {'optimizer.lrr': 1.0})
