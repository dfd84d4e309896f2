"""Dataset augmentation: avatars sampled from the conditional latent space, rendered under random cameras
and lights into new face shards (:mod:`fitdiff.augment.render_dataset`)."""

from fitdiff.augment.render_dataset import AugmentReport, render_dataset

__all__ = ["AugmentReport", "render_dataset"]
