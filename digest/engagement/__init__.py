"""Readers answering back: ship/skip votes from their own email, visits of our own pages from it,
and the editor's engagement report built from the ledger, the provider events and both."""
