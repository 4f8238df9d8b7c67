"""The editor's preview: what a run would send, rendered without sending, and served live."""
