"""The weekly run's steps as plain functions, the calls that flows/ tasks make."""
