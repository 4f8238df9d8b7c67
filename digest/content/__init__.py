"""The week's content: which tools are new, which face which, and what the email says of them."""
