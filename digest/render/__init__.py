"""Content into email bodies: MJML templates compiled to HTML, and the plain-text twin."""
