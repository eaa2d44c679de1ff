"""Tests of the SPair-71k tables (numbers computed by hand in comments)."""

import math

import pytest

from semcorr_jax import errors
from semcorr_jax.evaluation import spair_tables as st

KEYS = ('viewpoint_variation', 'scale_variation', 'truncation', 'occlusion')


def rec(category, labels, pck, key='pck@0.1'):
  record = {'category': category, key: pck}
  record.update(zip(KEYS, labels))
  return record


# category, (viewpoint, scale, truncation, occlusion), PCK.
RECORDS = [
    rec('aeroplane', (0, 0, 0, 0), 1.0),   # r1
    rec('aeroplane', (1, 0, 1, 0), 0.5),   # r2
    rec('cat', (0, 1, 0, 2), 0.25),        # r3
    rec('cat', (2, 2, 3, 3), 0.0),         # r4
    rec('tvmonitor', (0, 0, 0, 0), 0.75),  # r5
    rec('cat', (0, 0, 0, 0), float('nan')),  # r6: no valid keypoint
]


def pcks(cells):
  return {k: v['pck'] for k, v in cells.items()}


def counts(cells):
  return {k: v['num_pairs'] for k, v in cells.items()}


def assert_close(actual, expected):
  assert actual.keys() == expected.keys()
  for key, value in expected.items():
    if math.isnan(value):
      assert math.isnan(actual[key]), key
    else:
      assert actual[key] == pytest.approx(value), key


def test_categories_match_the_builder():
  # The builder module needs TFDS; the tables module must not.
  # pylint: disable-next=g-import-not-at-top
  from semcorr_jax.data.benchmarks import spair
  assert st.CATEGORIES == spair.CATEGORIES
  assert {k: len(v) for k, v in st.FACTORS.items()} == {
      k: len(v) for k, v in spair.LABEL_LEVELS.items()}


def test_marginal_tables():
  t = st.spair_tables(RECORDS, alpha=0.1)
  assert t['key'] == 'pck@0.1'
  assert t['condition'] == 'marginal'
  assert t['aggregation'] == 'per_pair_mean'
  assert t['num_skipped'] == 1  # r6
  # All: (1 + 0.5 + 0.25 + 0 + 0.75) / 5 = 2.5 / 5 = 0.5.
  assert t['all'] == {'pck': pytest.approx(0.5), 'num_pairs': 5}
  cats = t['categories']
  assert list(cats) == list(st.CATEGORIES)
  # aeroplane (1 + 0.5) / 2 = 0.75; cat (0.25 + 0) / 2 = 0.125 (r6 left
  # out); tvmonitor 0.75 / 1; every other category is empty.
  expected = {c: float('nan') for c in st.CATEGORIES}
  expected.update(aeroplane=0.75, cat=0.125, tvmonitor=0.75)
  assert_close(pcks(cats), expected)
  assert counts(cats)['cat'] == 2 and counts(cats)['bird'] == 0
  f = t['factors']
  # Viewpoint easy r1, r3, r5: (1 + 0.25 + 0.75) / 3 = 2/3; medium r2: 0.5;
  # hard r4: 0.
  assert_close(pcks(f['viewpoint_variation']),
               {'easy': 2 / 3, 'medium': 0.5, 'hard': 0.0})
  assert counts(f['viewpoint_variation']) == {
      'easy': 3, 'medium': 1, 'hard': 1}
  # Scale easy r1, r2, r5: (1 + 0.5 + 0.75) / 3 = 0.75; medium r3: 0.25;
  # hard r4: 0.
  assert_close(pcks(f['scale_variation']),
               {'easy': 0.75, 'medium': 0.25, 'hard': 0.0})
  # Truncation none r1, r3, r5: 2/3; source r2: 0.5; target: nobody; both
  # r4: 0.
  assert_close(pcks(f['truncation']), {
      'none': 2 / 3, 'source': 0.5, 'target': float('nan'), 'both': 0.0})
  assert counts(f['truncation'])['target'] == 0
  # Occlusion none r1, r2, r5: 0.75; source: nobody; target r3: 0.25; both
  # r4: 0.
  assert_close(pcks(f['occlusion']), {
      'none': 0.75, 'source': float('nan'), 'target': 0.25, 'both': 0.0})


def test_marginal_levels_average_back_to_all():
  # Each factor's levels partition the pairs: the count-weighted mean of a
  # factor's cells is All (viewpoint: (3 * 2/3 + 1 * 0.5 + 1 * 0) / 5 = 0.5).
  t = st.spair_tables(RECORDS)
  for cells in t['factors'].values():
    n = sum(c['num_pairs'] for c in cells.values())
    total = sum(c['pck'] * c['num_pairs'] for c in cells.values()
                if c['num_pairs'])
    assert n == 5
    assert total / n == pytest.approx(t['all']['pck'])


def test_others_easiest_condition():
  t = st.spair_tables(RECORDS, condition='others_easiest')
  f = t['factors']
  # Only r1 and r5 have all four labels 0: every level-0 column is
  # (1 + 0.75) / 2 = 0.875, which is why Table 2 (whose level-0 columns
  # differ) cannot have been made this way.
  for factor, level in (('viewpoint_variation', 'easy'),
                        ('scale_variation', 'easy'), ('truncation', 'none'),
                        ('occlusion', 'none')):
    assert f[factor][level] == {'pck': pytest.approx(0.875), 'num_pairs': 2}
  # r2 (viewpoint 1) also has truncation 1: out of both; r3 (scale 1) has
  # occlusion 2: out; r4 has every label > 0: out everywhere.
  assert f['viewpoint_variation']['medium']['num_pairs'] == 0
  assert f['scale_variation']['medium']['num_pairs'] == 0
  assert f['truncation']['source']['num_pairs'] == 0
  assert f['occlusion']['target']['num_pairs'] == 0
  # All and the categories do not depend on the condition.
  assert t['all']['pck'] == pytest.approx(0.5)
  assert t['categories']['cat']['pck'] == pytest.approx(0.125)


def test_other_alpha_key_and_bytes_category():
  records = [rec(b'bus', (0, 0, 0, 0), 0.2, key='pck@0.05'),
             rec('bus', (0, 0, 0, 0), 0.6, key='pck@0.05')]
  t = st.spair_tables(records, alpha=0.05)
  assert t['key'] == 'pck@0.05'
  # (0.2 + 0.6) / 2 = 0.4.
  assert t['categories']['bus']['pck'] == pytest.approx(0.4)
  with pytest.raises(errors.SemcorrError, match="lacks pck@0.1"):
    st.spair_tables(records, alpha=0.1)


def test_bad_records():
  with pytest.raises(errors.SemcorrError, match='lacks occlusion'):
    st.spair_tables([{'category': 'cat', 'pck@0.1': 0.5,
                      'viewpoint_variation': 0, 'scale_variation': 0,
                      'truncation': 0}])
  with pytest.raises(errors.SemcorrError, match="'tv' is not one of"):
    st.spair_tables([rec('tv', (0, 0, 0, 0), 0.5)])
  with pytest.raises(errors.SemcorrError, match=r'truncation=4; expected 0..3'):
    st.spair_tables([rec('cat', (0, 0, 4, 0), 0.5)])
  with pytest.raises(errors.SemcorrError, match=r'viewpoint_variation=3'):
    st.spair_tables([rec('cat', (3, 0, 0, 0), 0.5)])
  with pytest.raises(errors.SemcorrError, match='not percentages'):
    st.spair_tables([rec('cat', (0, 0, 0, 0), 50.0)])
  with pytest.raises(errors.SemcorrError, match='condition'):
    st.spair_tables(RECORDS, condition='fixed')


def test_empty_input():
  t = st.spair_tables([])
  assert t['all']['num_pairs'] == 0 and math.isnan(t['all']['pck'])
  assert t['num_skipped'] == 0


def test_markdown_table2_layout_and_values():
  t = st.spair_tables(RECORDS)
  # A second row: every pair at half the PCK -> All 0.25 -> 25.0.
  half = [dict(r, **{'pck@0.1': r['pck@0.1'] / 2}) for r in RECORDS]
  text = st.spair_markdown(t, label='trained',
                           compare={'untrained': st.spair_tables(half)})
  lines = text.splitlines()
  assert lines[0].startswith('SPair-71k, PCK@0.1 (%), mean over pairs')
  assert '1 pair(s) without valid keypoints' in lines[0]
  assert lines[2] == (
      '| method | Viewpoint easy | Viewpoint medi | Viewpoint hard | '
      'Scale easy | Scale medi | Scale hard | Truncation none | '
      'Truncation src | Truncation tgt | Truncation both | Occlusion none | '
      'Occlusion src | Occlusion tgt | Occlusion both | All |')
  assert lines[3] == '|---|' + '---:|' * 15
  # 2/3 -> 66.7, 0.5 -> 50.0, 0 -> 0.0, 0.75 -> 75.0, 0.25 -> 25.0,
  # empty -> n/a; All 0.5 -> 50.0.
  assert lines[4] == (
      '| trained | 66.7 | 50.0 | 0.0 | 75.0 | 25.0 | 0.0 | 66.7 | 50.0 | '
      'n/a | 0.0 | 75.0 | n/a | 25.0 | 0.0 | 50.0 |')
  # Halved: 33.3 25.0 0.0 37.5 12.5 0.0 33.3 25.0 n/a 0.0 37.5 n/a 12.5
  # 0.0 | All 25.0.
  assert lines[5] == (
      '| untrained | 33.3 | 25.0 | 0.0 | 37.5 | 12.5 | 0.0 | 33.3 | 25.0 | '
      'n/a | 0.0 | 37.5 | n/a | 12.5 | 0.0 | 25.0 |')
  assert lines[6] == (
      '| pairs | 3 | 1 | 1 | 3 | 1 | 1 | 3 | 1 | 0 | 1 | 3 | 0 | 1 | 1 | 5 |')
  # Per-category table: aeroplane 75.0, cat 12.5, tvmonitor 75.0.
  assert lines[8] == '| method | ' + ' | '.join(st.CATEGORIES) + ' | All |'
  cells = lines[10].split(' | ')
  assert cells[0] == '| trained'
  values = dict(zip(st.CATEGORIES + ('All',), cells[1:]))
  assert values['aeroplane'] == '75.0' and values['cat'] == '12.5'
  assert values['tvmonitor'] == '75.0' and values['bird'] == 'n/a'
  assert values['All'] == '50.0 |'
  assert lines[12].startswith('| pairs | 2 | 0 |')
  assert len(lines) == 13


def test_markdown_without_categories():
  text = st.spair_markdown(st.spair_tables(RECORDS), per_category=False)
  assert 'aeroplane' not in text
  assert text.count('\n') == 6  # caption, blank, 2 heading, row, pairs.
