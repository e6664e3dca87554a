"""Shipped word lists: stop words, pronouns, demographic descriptor terms, an example blocklist."""
