"""The tool catalog: the site's records, validated and stored, and read back as plain records."""
