"""Flamingo stage 1."""
