"""Helpers for autoprune's own tests: toy problems and small jobs that workers can import."""
