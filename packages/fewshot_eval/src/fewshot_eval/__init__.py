"""Flamingo stage 3."""
