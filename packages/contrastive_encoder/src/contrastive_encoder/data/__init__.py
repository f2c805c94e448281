"""Data loading for stage 1 (image-text pairs)."""
