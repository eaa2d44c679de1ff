"""The cases of benchmarks/bad_inputs.py on inputs and outputs: pictures,
keypoint CSVs and output paths of semcorr-match, semcorr-fetch-weights,
semcorr-import-sfnet and the Python API (`bad_input_cases` has the
registry, the helpers and the cases on workdirs)."""

from __future__ import annotations

import os

import numpy as np

import bad_input_cases as base  # pylint: disable=g-bad-import-order
import bad_input_files as files  # pylint: disable=g-bad-import-order

case, simple = base.case, base.simple
POINTS = [[10.0, 5.0], [20.0, 15.0], [30.0, 25.0]]  # x, y inside the photo
BOMB_RSS_MB = 1000  # peak memory above this for a tiny weight file: a bomb
_NO_NETWORK = {'https_proxy': 'http://127.0.0.1:9',
               'http_proxy': 'http://127.0.0.1:9', 'no_proxy': ''}


# --- helpers ------------------------------------------------------------------
def _same_as(ctx, proc, source: str, target: str, what: str) -> None:
  if proc.rc != 0:
    return
  want = ctx.reference(source, target)
  got = base.load_npy(ctx.path('out', 'm_mapping.npy'))
  if want is None:
    ctx.problem('the reference match failed')
  elif got is None or got.shape != want.shape or not np.allclose(
      got, want, atol=1e-3):
    shape = None if got is None else got.shape
    ctx.problem(f'{what}: result (shape {shape}) differs from the same '
                f'picture read right (shape {want.shape})')


def _csv(ctx, text: str, expected=None):
  path = ctx.path('points.csv')
  with open(path, 'w', encoding='utf-8', newline='') as f:
    f.write(text)
  proc = base.run_match(ctx, extra=[f'--keypoints={path}'])
  if proc.rc == 0 and expected is not None:
    try:
      got = np.loadtxt(ctx.path('out', 'm_keypoints.csv'), delimiter=',',
                       skiprows=1, usecols=(0, 1), ndmin=2)
    except (OSError, ValueError):
      got = None
    if got is None or got.shape != np.shape(expected) or not np.allclose(
        got, expected):
      ctx.problem(f'points read as {None if got is None else got.tolist()}'
                  f', not {expected}')
  return proc


# --- match: outputs and pictures ----------------------------------------------
def _output_is_a_folder(ctx):
  os.makedirs(ctx.path('out', 'm.png'))
  return base.run_match(ctx)


def _picture(name: str):
  return lambda ctx: base.run_match(ctx, ctx.inputs[name])


simple('match_output_is_a_folder', 'match', 'error',
       '--output naming an existing folder out/m.png', _output_is_a_folder)
simple('match_output_in_missing_folder', 'match', 'ok',
       '--output=out/new/deeper/m.png',
       lambda ctx: base.run_match(ctx, output='--output=' + ctx.path(
           'out', 'new', 'deeper', 'm.png')))
simple('match_output_not_utf8', 'match', 'any',
       '--output with a non-UTF-8 byte in its file name',
       lambda ctx: base.run_match(ctx, output=b'--output=' + os.fsencode(
           ctx.path('out')) + b'/\xff.png'))
simple('match_png_decompression_bomb', 'match', 'error',
       'a 1 KB PNG declaring 20000 x 20000 pixels', _picture('bomb_png'))
simple('match_png_truncated', 'match', 'error', 'a PNG cut in half',
       _picture('truncated_png'))
simple('match_text_named_png', 'match', 'error', 'a text file named .png',
       _picture('text_png'))
simple('match_missing_source', 'match', 'error', '--source naming nothing',
       lambda ctx: base.run_match(ctx, ctx.path('missing.png')))


@case('match', 'ok')
def match_png_16_bit(ctx):
  """A 16-bit grayscale PNG source: must match as its 8-bit twin."""
  proc = base.run_match(ctx, ctx.inputs['gray16'])
  _same_as(ctx, proc, ctx.inputs['gray8'], ctx.inputs['photo'], '16-bit')
  return proc


@case('match', 'ok')
def match_png_exif_orientation(ctx):
  """A PNG stored sideways with EXIF orientation 6: must match upright."""
  proc = base.run_match(ctx, ctx.inputs['exif'])
  _same_as(ctx, proc, ctx.inputs['photo'], ctx.inputs['photo'], 'EXIF')
  return proc


# --- match: keypoint CSVs -----------------------------------------------------
def _rows(points, order=(0, 1), sep=','):
  return ''.join(sep.join(f'{p[i]:g}' for i in order) + '\n' for p in points)


_CSVS = (  # name, expect, what, text, the points it holds (None: refused)
    ('byte_order_mark', 'ok', "Excel 'CSV UTF-8' (a BOM), no header",
     '\ufeff' + _rows(POINTS), POINTS),
    ('bom_y_x_header', 'ok', "a BOM and a 'y,x' header",
     '\ufeffy,x\n' + _rows(POINTS, (1, 0)), POINTS),
    ('y_x_header', 'ok', "a 'y,x' header", 'y,x\n' + _rows(POINTS, (1, 0)),
     POINTS),
    ('semicolons', 'ok', "'x;y' with semicolons",
     'x;y\n' + _rows(POINTS, sep=';'), POINTS),
    ('point_outside', 'error', 'x=100 on a 64-pixel-wide source',
     _rows(POINTS + [[100.0, 5.0]]), None),
    ('empty', 'error', 'an empty file', '', None),
    ('nan', 'error', 'a nan', '10,5\nnan,5\n', None),
)
for _name, _expect, _what, _text, _points in _CSVS:
  simple(f'match_csv_{_name}', 'match', _expect, f'keypoints CSV: {_what}',
         lambda ctx, t=_text, p=_points: _csv(ctx, t, p))


# --- fetch-weights and import-sfnet -------------------------------------------
def _fetch(*args: str, read_only: str = '', folder_named: str = ''):
  """fetch-weights resnet50 without network; args may hold {folder}."""
  def run(ctx):
    folder = ctx.path('weights')
    os.makedirs(os.path.join(folder, folder_named))
    if not read_only:
      ctx.watch(folder, clean_on_failure=True)
    return ctx.run('fetch-weights', [
        'resnet50', '--timeout=5',
        *(a.format(folder=folder, inputs=ctx.inputs) for a in args)],
                   env=_NO_NETWORK, read_only=folder if read_only else '')
  return run


simple('fetch_read_only_output_folder', 'fetch-weights', 'error',
       '--output in a read-only folder (no network)',
       _fetch('--output={folder}/r.npz', read_only='yes'))
simple('fetch_output_is_a_folder', 'fetch-weights', 'error',
       '--output naming an existing folder r.npz (no network)',
       _fetch('--output={folder}/r.npz', folder_named='r.npz'))
simple('fetch_input_missing', 'fetch-weights', 'error',
       '--input naming nothing',
       _fetch('--input={folder}/no.pth', '--output={folder}/r.npz'))
simple('fetch_input_not_torch', 'fetch-weights', 'error',
       '--input a text file with the right name',
       _fetch('--input={inputs[not_torch]}', '--output={folder}/r.npz'))


def _import(ctx, release: str, workdir: str = ''):
  workdir = workdir or ctx.fresh()
  proc = ctx.run('import-sfnet', [release, f'--workdir={workdir}',
                                  ctx.config()])
  if proc.max_rss_mb > BOMB_RSS_MB:
    ctx.problem(f'peak memory {proc.max_rss_mb:.0f} MB for a file of '
                f'{os.path.getsize(release)} bytes')
  return proc


def _release(name: str):
  return lambda ctx: _import(ctx, ctx.inputs[name])


simple('import_stride_0_bomb', 'import-sfnet', 'error',
       'a 600-byte legacy .pth declaring a stride-0 (16384, 16384) tensor',
       _release('legacy_bomb'))
simple('import_zip_bomb', 'import-sfnet', 'error',
       'a 1 MB zip .pth whose storage inflates to 1 GiB', _release('zip_bomb'))
simple('import_truncated_file', 'import-sfnet', 'error',
       'a torch file cut in half', _release('truncated_pth'))
simple('import_into_trained_workdir', 'import-sfnet', 'error',
       'into a workdir that has checkpoints',
       lambda ctx: _import(ctx, ctx.inputs['release'], ctx.trained()))


@case('import-sfnet', 'error')
def import_pickle_calls_os_system(ctx):
  """A legacy .pth whose pickle calls os.system (must not run)."""
  marker, path = ctx.path('ran'), ctx.path('evil.pth')
  with open(path, 'wb') as f:
    f.write(files.os_system_pickle(f'touch {marker}'))
  proc = _import(ctx, path)
  if os.path.exists(marker):
    ctx.problem('the pickle ran os.system')
  return proc


# --- the Python API -----------------------------------------------------------
def _api_match(ctx, code: str):
  return ctx.api(
      f'm = semcorr_jax.load({ctx.trained()!r})\nfrom PIL import Image\n'
      f'img = np.asarray(Image.open({ctx.inputs["photo"]!r}).convert("RGB"))\n'
      + code)


simple('api_load_missing_step', 'api', 'error',
       'semcorr_jax.load(workdir, step=3) (steps 2 and 4 exist)',
       lambda ctx: ctx.api(f'semcorr_jax.load({ctx.trained()!r}, step=3)'))
simple('api_load_missing_workdir', 'api', 'error',
       'semcorr_jax.load of a folder that does not exist',
       lambda ctx: ctx.api(f'semcorr_jax.load({ctx.path("nothing")!r})'))
simple('api_keypoints_outside', 'api', 'error',
       'Matcher.transfer_keypoints with x=100 on a 64-pixel-wide source',
       lambda ctx: _api_match(ctx, 'print(m.transfer_keypoints(img, img, '
                              '[[10, 5], [100, 5]]))'))


@case('api', 'any')
def api_match_uint16(ctx):
  """Matcher.match of a uint16 image (the photo x 257)."""
  proc = _api_match(
      ctx, 'a = m.match(img, img)["mapping_st"]\n'
      'b = m.match(img.astype(np.uint16) * 257, img)["mapping_st"]\n'
      'print("SAME" if np.allclose(a, b, atol=1e-3) else "DIFFERENT")')
  if proc.rc == 0 and 'SAME' not in proc.stdout:
    ctx.problem('uint16 image matched differently from its uint8 twin')
  return proc


@case('api', 'ok')
def api_image_files(ctx):
  """Matcher.match of 16-bit and EXIF-rotated PNG files: as their twins."""
  i = ctx.inputs
  same = ('print(name, "SAME" if np.allclose(m.match(a, b)["mapping_st"], '
          'm.match(c, b)["mapping_st"], atol=1e-3) else "DIFFERENT")')
  proc = _api_match(ctx, (
      f'for name, a, b, c in (("16-bit", {i["gray16"]!r}, {i["photo"]!r}, '
      f'{i["gray8"]!r}), ("EXIF", {i["exif"]!r}, {i["photo"]!r}, '
      f'{i["photo"]!r})):\n  {same}'))
  for name in ('16-bit', 'EXIF'):
    if proc.rc == 0 and f'{name} SAME' not in proc.stdout:
      ctx.problem(f'{name} file matched differently from its plain twin')
  return proc
