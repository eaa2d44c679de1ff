"""Pure geometry: grids, sampling, correlation, soft-argmax, consistency, masks.

Every function follows the coordinate conventions of docs/architecture.md:
points are (x, y) pixels with pixel centres at integers, normalised coordinates
use align_corners=True, `mapping_ab` is (B, Ha, Wa, 2) absolute (x, y) in b's
pixels, `corr_ab` is (B, Ha, Wa, Hb, Wb).

`guidance` holds confident-match guidance: mutual-consistency confidence,
truncation, soft-argmax over kept matches, moving-least-squares propagation of
sparse displacements and Gaussian modulation of a correlation volume.
"""

from semcorr_jax.geometry.consistency import compose_mappings
from semcorr_jax.geometry.consistency import cycle_error
from semcorr_jax.geometry.consistency import forward_backward_mask
from semcorr_jax.geometry.consistency import soft_mutual_nn
from semcorr_jax.geometry.correlation import correlation_4d
from semcorr_jax.geometry.correlation import l2_normalize
from semcorr_jax.geometry.correlation import mutual_nn_filter
from semcorr_jax.geometry.correlation import normalize_over_a
from semcorr_jax.geometry.correlation import normalize_over_b
from semcorr_jax.geometry.correlation import transpose_4d
from semcorr_jax.geometry.grids import denormalize_coords
from semcorr_jax.geometry.grids import flow_to_mapping
from semcorr_jax.geometry.grids import in_bounds
from semcorr_jax.geometry.grids import mapping_to_flow
from semcorr_jax.geometry.grids import normalize_coords
from semcorr_jax.geometry.grids import normalized_flow
from semcorr_jax.geometry.grids import normalized_to_mapping
from semcorr_jax.geometry.grids import pixel_grid
from semcorr_jax.geometry.grids import rescale_coords
from semcorr_jax.geometry.grids import resize_images
from semcorr_jax.geometry.grids import resize_mapping
from semcorr_jax.geometry.guidance import confident_cells
from semcorr_jax.geometry.guidance import gaussian_modulation
from semcorr_jax.geometry.guidance import gaussian_modulation_at_confident
from semcorr_jax.geometry.guidance import guidance_displacement
from semcorr_jax.geometry.guidance import mls_interpolate
from semcorr_jax.geometry.guidance import mutual_consistency
from semcorr_jax.geometry.guidance import truncate
from semcorr_jax.geometry.masks import downsample_mask
from semcorr_jax.geometry.sampling import bilinear_sample
from semcorr_jax.geometry.sampling import grid_sample
from semcorr_jax.geometry.sampling import sample_points
from semcorr_jax.geometry.sampling import warp
from semcorr_jax.geometry.softargmax import gaussian_around_argmax
from semcorr_jax.geometry.softargmax import hard_argmax
from semcorr_jax.geometry.softargmax import kernel_soft_argmax
from semcorr_jax.geometry.softargmax import soft_argmax

__all__ = [
    'bilinear_sample',
    'compose_mappings',
    'confident_cells',
    'correlation_4d',
    'cycle_error',
    'denormalize_coords',
    'downsample_mask',
    'flow_to_mapping',
    'forward_backward_mask',
    'gaussian_around_argmax',
    'gaussian_modulation',
    'gaussian_modulation_at_confident',
    'grid_sample',
    'guidance_displacement',
    'hard_argmax',
    'in_bounds',
    'kernel_soft_argmax',
    'l2_normalize',
    'mapping_to_flow',
    'mls_interpolate',
    'mutual_consistency',
    'mutual_nn_filter',
    'normalize_coords',
    'normalize_over_a',
    'normalize_over_b',
    'normalized_flow',
    'normalized_to_mapping',
    'pixel_grid',
    'rescale_coords',
    'resize_images',
    'resize_mapping',
    'sample_points',
    'soft_argmax',
    'soft_mutual_nn',
    'transpose_4d',
    'truncate',
    'warp',
]
