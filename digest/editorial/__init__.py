"""The editor's hand on a week's digest: edits (`edits`), how they apply (`applying`)."""
