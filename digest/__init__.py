"""verdict-digest: the weekly email of head-to-head AI-tool verdicts."""

__version__ = "0.1.0"
