"""semcorr_jax.evaluation."""
