"""The subscribers: their files, their addresses, and how each one's status changes."""
