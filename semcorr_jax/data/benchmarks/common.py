"""What the benchmark-dataset builders share: example features, file finding.

Every benchmark builder (PF-PASCAL, PF-WILLOW, SPair-71k, TSS, Caltech-101)
is a `tfds.core.GeneratorBasedBuilder` over files the user downloads by hand
(`manual_dir`): these datasets are not on any mirror TFDS can reach. The
records keep the original image bytes and the annotations in the files'
original pixel coordinates; every resizing, squashing or padding is the
evaluation protocol's business (`semcorr_jax.evaluation`), never the
builder's.

Conventions (docs/architecture.md): points are `(x, y)`, x first, in the
original image's pixels as written in the official annotation files
(PF-PASCAL, PF-WILLOW and SPair-71k store them so; docs/benchmarks.md says how
each benchmark treats its origin). Boxes are `(x_min, y_min, x_max, y_max)`,
NaN when a dataset has none.

Keypoint-pair records (`keypoint_pair_features`), one per pair:

  pair_id            Text       unique within the split, e.g. '0001-2008_00..'
  source_image       Image      original bytes (JPEG or PNG), any size
  target_image       Image
  source_file        Text       path relative to the dataset root
  target_file        Text
  category           ClassLabel the dataset's class list
  source_keypoints   (K, 2) float32  (x, y); K varies per pair
  target_keypoints   (K, 2) float32  row k of both is the same semantic point
  keypoint_valid     (K,) bool  False where either side is not annotated
  source_bbox        (4,) float32  object box in the source (NaN: unknown)
  target_bbox        (4,) float32
  flip               bool       PF-PASCAL training rows: flip the pair
                                (see pf_pascal.py); False elsewhere
  + dataset extras (SPair-71k: viewpoint/scale/truncation/occlusion labels).
"""

from __future__ import annotations

import csv
import io
from typing import Iterable, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from semcorr_jax import errors

NAN_BOX = (float('nan'),) * 4


def keypoint_pair_features(categories: Sequence[str],
                           extra: Mapping[str, tfds.features.FeatureConnector]
                           | None = None) -> tfds.features.FeaturesDict:
  """The features of a keypoint-pair record (module docstring) plus `extra`."""
  features = {
      'pair_id': tfds.features.Text(),
      'source_image': tfds.features.Image(),
      'target_image': tfds.features.Image(),
      'source_file': tfds.features.Text(),
      'target_file': tfds.features.Text(),
      'category': tfds.features.ClassLabel(names=list(categories)),
      'source_keypoints': tfds.features.Tensor(shape=(None, 2),
                                               dtype=np.float32),
      'target_keypoints': tfds.features.Tensor(shape=(None, 2),
                                               dtype=np.float32),
      'keypoint_valid': tfds.features.Tensor(shape=(None,), dtype=np.bool_),
      'source_bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32),
      'target_bbox': tfds.features.Tensor(shape=(4,), dtype=np.float32),
      'flip': np.bool_,
  }
  features.update(extra or {})
  return tfds.features.FeaturesDict(features)


def keypoint_arrays(source_points: np.ndarray, target_points: np.ndarray
                    ) -> dict[str, np.ndarray]:
  """`source_keypoints`, `target_keypoints`, `keypoint_valid` of a record.

  A keypoint is valid when both its points are finite (official files mark
  missing points with NaN or -1; pass those as NaN). Invalid rows are stored
  as -1 so records stay finite; `keypoint_valid` is the authority.

  Args:
    source_points: (K, 2) (x, y), NaN where not annotated.
    target_points: (K, 2).
  """
  src = np.asarray(source_points, np.float32).reshape(-1, 2)
  tgt = np.asarray(target_points, np.float32).reshape(-1, 2)
  if src.shape != tgt.shape:
    raise errors.SemcorrError(
        f'{src.shape[0]} source keypoints but {tgt.shape[0]} target keypoints')
  valid = np.all(np.isfinite(src), axis=1) & np.all(np.isfinite(tgt), axis=1)
  src = np.where(valid[:, None], src, -1.0).astype(np.float32)
  tgt = np.where(valid[:, None], tgt, -1.0).astype(np.float32)
  return {'source_keypoints': src, 'target_keypoints': tgt,
          'keypoint_valid': valid}


def manual_dir_of(dl_manager, dataset: str, hint: str) -> epath.Path:
  """`dl_manager.manual_dir`, or a SemcorrError saying how to fill it.

  Args:
    dl_manager: the builder's download manager.
    dataset: name for the message, e.g. 'PF-PASCAL'.
    hint: what to download and where to put it.
  """
  try:
    return epath.Path(dl_manager.manual_dir)
  except AssertionError:  # TFDS: the manual dir is missing or empty.
    # pylint: disable-next=protected-access
    path = (getattr(dl_manager, '_manual_dir', None)
            or dl_manager.download_dir / 'manual')
    raise errors.SemcorrError(
        f'{dataset}: the manual dir {path} is missing or empty; {hint}.'
    ) from None


def find_root(manual_dir: epath.PathLike, marker: str,
              candidates: Iterable[str], dataset: str, hint: str
              ) -> epath.Path:
  """The first `manual_dir/<candidate>` that holds `marker`.

  Args:
    manual_dir: where the user put the files.
    marker: a path relative to the root that proves it is the root, e.g.
      'JPEGImages'.
    candidates: sub-folders to try, '' meaning `manual_dir` itself.
    dataset: name for the message.
    hint: what to download and where to put it.

  Raises:
    SemcorrError: naming the folders searched, the marker and the hint.
  """
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.is_dir():
    raise errors.SemcorrError(
        f'{dataset}: manual dir {manual_dir} does not exist; {hint}.')
  tried = []
  for candidate in candidates:
    root = manual_dir / candidate if candidate else manual_dir
    if (root / marker).exists():
      return root
    tried.append(str(root))
  raise errors.SemcorrError(
      f'{dataset}: no {marker} under {", ".join(tried)}; {hint}.')


def require(path: epath.Path, dataset: str, hint: str) -> epath.Path:
  """`path` if it exists, else a SemcorrError naming it and the hint."""
  if not path.exists():
    raise errors.SemcorrError(
        f'{dataset}: {path} is missing (incomplete download?); {hint}.')
  return path


def read_csv(path: epath.Path, dataset: str, hint: str,
             required_columns: Sequence[str] = ()) -> list[dict[str, str]]:
  """Rows of a CSV file with a header, as dicts (values stripped).

  Raises:
    SemcorrError: a missing file or a missing required column.
  """
  text = require(path, dataset, hint).read_text()
  reader = csv.DictReader(io.StringIO(text))
  columns = [c.strip() for c in (reader.fieldnames or [])]
  missing = [c for c in required_columns if c not in columns]
  if missing:
    raise errors.SemcorrError(
        f'{dataset}: {path} lacks the column(s) {", ".join(missing)} (has '
        f'{", ".join(columns) or "no header"}); is it the official file?')
  return [{(k or '').strip(): (v or '').strip() for k, v in row.items()}
          for row in reader]


def float_list(text: str, separator: str = ';') -> np.ndarray:
  """'1.5;2;3' -> float64 array (empty text -> empty array)."""
  parts = [p for p in text.replace(separator, ' ').split() if p]
  return np.array([float(p) for p in parts], np.float64)
