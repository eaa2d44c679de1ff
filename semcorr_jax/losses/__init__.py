"""semcorr_jax.losses."""
