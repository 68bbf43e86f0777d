"""Data sets and corpora: the built-in ones in one registry, the readers, the fetching."""
