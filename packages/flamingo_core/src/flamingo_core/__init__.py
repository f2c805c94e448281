"""Flamingo stage 2."""
