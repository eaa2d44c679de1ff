"""Image and keypoint files as the CLIs and the Python API read them.

Small real files are written to tmp_path: 16-bit and float images, EXIF
orientation, transparency, decompression bombs, non-UTF-8 names, keypoint
CSVs from spreadsheets (byte-order mark, `;`, tab, spaces, headers in any
order), and keypoints outside the image.
"""

import os
import subprocess
import sys

import jax.numpy as jnp
from matplotlib import figure
import ml_collections
import numpy as np
from PIL import Image
import pytest

from semcorr_jax import api
from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.cli import common
from semcorr_jax.cli import match
from semcorr_jax.errors import SemcorrError
from helpers import paths


def _read_via_api(path, what='image'):
  """The image the Python API matches for a path, back in uint8."""
  return np.round(api.check_image(path, what) * 255).astype(np.uint8)


READERS = {'cli': common.read_image, 'api': _read_via_api}


@pytest.fixture(params=sorted(READERS))
def read(request):
  return READERS[request.param]


# --- image kinds --------------------------------------------------------------
def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path, read):
  levels = np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16)
  path = tmp_path / 'deep.png'
  Image.fromarray(np.repeat(levels, 3, axis=0)).save(path)
  assert Image.open(path).mode.startswith('I')
  image = read(str(path))
  assert image.shape == (3, 4, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image[1, :, 0], [0, 64, 128, 255])
  np.testing.assert_array_equal(image[..., 0], image[..., 2])
  # The same values in a 32-bit integer TIFF (mode 'I').
  Image.fromarray(np.repeat(levels, 3, axis=0).astype(np.int32)).save(
      tmp_path / 'deep.tif')
  np.testing.assert_array_equal(read(str(tmp_path / 'deep.tif')), image)


def test_float_tiff_in_0_1_is_scaled_and_other_ranges_refused(tmp_path, read):
  path = tmp_path / 'float.tif'
  Image.fromarray(np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)).save(path)
  assert Image.open(path).mode == 'F'
  np.testing.assert_array_equal(read(str(path))[..., 1], [[0, 64], [128, 255]])
  Image.fromarray(np.array([[0.0, 3.0], [0.5, 1.0]], np.float32)).save(path)
  with pytest.raises(SemcorrError, match=r'float.*\[0, 3\].*\[0, 1\]'):
    read(str(path))


def test_transparency_is_flattened_onto_white(tmp_path, read):
  grey = np.array([[0, 100], [200, 50]], np.uint8)
  alpha = np.array([[0, 255], [255, 255]], np.uint8)
  path = tmp_path / 'la.png'
  Image.fromarray(np.stack([grey, alpha], -1), 'LA').save(path)
  np.testing.assert_array_equal(read(str(path))[..., 0],
                                [[255, 100], [200, 50]])


def test_palette_and_cmyk_images_become_rgb(tmp_path, read):
  rgb = np.zeros((4, 6, 3), np.uint8)
  rgb[:, :3] = (200, 30, 10)
  rgb[:, 3:] = (10, 40, 220)
  Image.fromarray(rgb).quantize(4).save(tmp_path / 'p.png')
  np.testing.assert_array_equal(read(str(tmp_path / 'p.png')), rgb)
  Image.fromarray(rgb).convert('CMYK').save(tmp_path / 'c.tif')
  np.testing.assert_allclose(read(str(tmp_path / 'c.tif')), rgb, atol=2)


def test_lab_image_is_refused_not_miscoloured(tmp_path, read):
  Image.new('LAB', (4, 4), (50, 0, 0)).save(tmp_path / 'lab.tif')
  with pytest.raises(SemcorrError, match="mode 'LAB' to RGB"):
    read(str(tmp_path / 'lab.tif'))


def test_exif_orientation_is_applied(tmp_path, read):
  stored = np.zeros((8, 12, 3), np.uint8)  # left half red, right half blue
  stored[:, :6, 0] = 255
  stored[:, 6:, 2] = 255
  exif = Image.Exif()
  exif[0x0112] = 6  # shown rotated 90 degrees clockwise
  path = tmp_path / 'phone.jpg'
  Image.fromarray(stored).save(path, exif=exif, quality=95)
  image = read(str(path)).astype(int)
  assert image.shape == (12, 8, 3)  # upright: tall
  top, bottom = image[:5].mean((0, 1)), image[7:].mean((0, 1))
  assert top[0] > 200 and top[2] < 50  # the stored left half is on top
  assert bottom[2] > 200 and bottom[0] < 50


@pytest.mark.parametrize('side', [12, 20])  # 144 px: Pillow's warning; 400
def test_decompression_bomb_is_one_user_error(tmp_path, monkeypatch, read,
                                              side):
  path = tmp_path / 'bomb.png'
  Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(path)
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)
  with pytest.raises(SemcorrError) as e:
    read(str(path))
  message = str(e.value)
  assert f'{side * side} pixels' in message and '100' in message
  assert 'MAX_IMAGE_PIXELS' in message and '\n' not in message


def test_non_utf8_file_names(tmp_path, read):
  name = os.path.join(os.fsencode(tmp_path), b'caf\xe9.png')
  image = np.full((4, 5, 3), 7, np.uint8)
  Image.fromarray(image).save(os.fsdecode(name))
  np.testing.assert_array_equal(read(name), image)  # bytes
  np.testing.assert_array_equal(read(os.fsdecode(name)), image)  # str
  for missing in (name + b'x', os.fsdecode(name + b'x')):
    with pytest.raises(SemcorrError, match='no such file') as e:
      read(missing)
    str(e.value).encode('ascii')  # printable anywhere, even on ASCII stderr
  csv_name = os.path.join(os.fsencode(tmp_path), b'pts\xff.csv')
  with open(csv_name, 'w') as f:
    f.write('x,y\n1,2\n')
  np.testing.assert_array_equal(common.read_keypoints_csv(csv_name), [[1, 2]])
  with pytest.raises(SemcorrError) as e:
    common.read_keypoints_csv(csv_name + b'x')
  str(e.value).encode('ascii')


# --- keypoint CSVs ------------------------------------------------------------
@pytest.mark.parametrize('text, expected', [
    ('\ufeff10,20\n30,40\n', [[10, 20], [30, 40]]),  # Excel "CSV UTF-8"
    ('\ufeffy,x\n20,10\n40,30\n', [[10, 20], [30, 40]]),
    ('y,x\r\n20,10\r\n40,30\r\n', [[10, 20], [30, 40]]),
    ('X,Y\n10,20\n30,40\n', [[10, 20], [30, 40]]),
    ('id,y_source,x_source\n1,20,10\n2,40,30\n', [[10, 20], [30, 40]]),
    ('x_source,y_source,x_target,y_target\n10,20,0,0\n30,40,1,1\n',
     [[10, 20], [30, 40]]),
    ('"x","y"\n"10","20"\n"30","40"\n', [[10, 20], [30, 40]]),
    ('10;20\n30;40\n', [[10, 20], [30, 40]]),
    ('x;y\n10;20\n\n30;40\n', [[10, 20], [30, 40]]),
    ('x;y\n10,5;20,25\n30;40\n', [[10.5, 20.25], [30, 40]]),  # decimal comma
    ('x\ty\n10\t20\n30\t40\n', [[10, 20], [30, 40]]),
    ('10 20\n  30   40  \n', [[10, 20], [30, 40]]),
    ('x y\n10.5 20\n30 4e1\n', [[10.5, 20], [30, 40]]),
])
def test_keypoints_csv_dialects(tmp_path, text, expected):
  path = tmp_path / 'points.csv'
  path.write_text(text, encoding='utf-8')
  points = common.read_keypoints_csv(str(path))
  assert points.dtype == np.float64
  np.testing.assert_array_equal(points, expected)


@pytest.mark.parametrize('text, message', [
    ('row,col\n1,2\n', 'no x and y columns'),
    ('x,z\n1,2\n', 'no x and y columns'),
    ('x/y\n1 2\n', 'no x and y columns'),
    ('x;y\n1;abc\n', 'line 2: expected two numbers'),
    ('x,y\n', 'holds no points'),
    ('x,y\n1,inf\n', 'NaN or infinite'),
])
def test_keypoints_csv_errors(tmp_path, text, message):
  path = tmp_path / 'points.csv'
  path.write_text(text)
  with pytest.raises(SemcorrError, match=message):
    common.read_keypoints_csv(str(path))


# --- keypoints against the image, and paths through the Python API -----------
class _ShiftByOne:
  """A stand-in method: mapping_st = source pixel + (1, 0) at model size."""

  flows = outputs.DEFAULT_FLOWS

  def predict(self, variables, source, target):
    b, h, w = source.shape[:3]
    grid = jnp.broadcast_to(geometry.pixel_grid(h, w), (b, h, w, 2))
    return {'mapping_st': grid + variables['shift'],
            'mapping_ts': grid - variables['shift']}


@pytest.fixture(scope='module')
def matcher():
  config = ml_collections.ConfigDict({'method': 'shift', 'data': {
      'image_size': (8, 8)}})
  return api.Matcher(config, _ShiftByOne(),
                     {'shift': jnp.asarray([1.0, 0.0])}, step=1)


@pytest.mark.parametrize('bad_row', [[9.6, 3.0], [2.0, -0.6], [np.nan, 1.0]])
def test_transfer_keypoints_rejects_points_outside_the_source(matcher,
                                                              bad_row):
  source = np.zeros((6, 9, 3), np.uint8)  # x in [-0.5, 8.5] is on it
  points = np.array([[0.0, 0.0], [-0.5, 5.5], bad_row, [50.0, 50.0]])
  with pytest.raises(SemcorrError, match=r'points_s.*(point 3|NaN)') as e:
    matcher.transfer_keypoints(source, source, points)
  if np.isfinite(bad_row[0]):
    assert '9x6' in str(e.value) and '2 of 4' in str(e.value)
  moved = matcher.transfer_keypoints(source, source, points[:2])
  np.testing.assert_allclose(moved[:, 0], [8 / 7, 8 / 7], atol=1e-4)


def test_match_files_rejects_keypoints_outside_the_source_first(tmp_path):
  (tmp_path / 'points.csv').write_text('x,y\n10,10\n451,10\n')
  with pytest.raises(SemcorrError, match=r'point 2 .*451x300'):
    match.match_files(str(tmp_path / 'no_workdir'), 'skimage:chelsea',
                      'skimage:chelsea', str(tmp_path / 'out.png'),
                      keypoints=str(tmp_path / 'points.csv'))


def test_matcher_reads_paths_like_the_cli(matcher, tmp_path):
  image = (np.random.default_rng(0).random((6, 9, 3)) * 255).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / 'a.png')
  from_array = matcher.match(image, image)['mapping_st']
  from_paths = matcher.match(str(tmp_path / 'a.png'), tmp_path / 'a.png')
  np.testing.assert_array_equal(from_paths['mapping_st'], from_array)
  warped = matcher.warp_source_to_target(tmp_path / 'a.png', 'skimage:camera')
  assert warped.shape == (512, 512, 3)
  with pytest.raises(SemcorrError, match=r"source '.*nope.png': no such file"):
    matcher.match(str(tmp_path / 'nope.png'), image)


@pytest.mark.slow  # CLI subprocess
def test_match_cli_non_utf8_source_name_is_one_clean_line(tmp_path):
  source = os.path.join(os.fsencode(tmp_path), b'\xff.png')
  proc = subprocess.run(
      [sys.executable, '-m', 'semcorr_jax.cli.match',
       f'--workdir={tmp_path}', b'--source=' + source,
       '--target=skimage:chelsea', f'--output={tmp_path / "o.png"}'],
      capture_output=True, cwd=str(paths.REPO), timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  stderr = proc.stderr.decode(errors='replace')
  assert proc.returncode == 1 and 'Traceback' not in stderr, stderr
  errors = [l for l in stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and errors[0].endswith(
      "\\udcff.png': no such file"), stderr


def test_match_picture_title_draws_any_file_name(tmp_path):
  title = match._title('cost$10$.png', os.fsdecode(b'\xff.png'), 3)
  assert title == r'cost\$10\$.png -> \xff.png (step 3)'
  picture = figure.Figure()
  picture.suptitle(title)
  picture.savefig(tmp_path / 'title.png')  # raises on mathtext or surrogates
