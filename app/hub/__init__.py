"""Hugging Face: search with a fit estimate for this host, and downloads with progress."""
