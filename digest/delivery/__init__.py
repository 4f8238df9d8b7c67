"""Delivery state: one row per (digest, subscriber), moved only by confirmed outcomes."""
