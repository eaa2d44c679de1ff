"""semcorr_jax.models."""
