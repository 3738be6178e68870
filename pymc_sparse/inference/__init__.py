"""Inference on top of the distributions: hyperparameter samplers and latent recovery."""
