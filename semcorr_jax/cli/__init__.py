"""semcorr_jax.cli."""
