"""Training: pure mappings from TrainingSpec to library objects, runners, callbacks."""
