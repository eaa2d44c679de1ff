"""semcorr_jax.data."""
