"""The subscriber-facing web app behind every email's links (`digest web`): one-click
unsubscribe, preferences, double opt-in sign-up, the SendGrid event webhook and the archive."""
