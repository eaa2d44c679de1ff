"""semcorr_jax.weights."""
