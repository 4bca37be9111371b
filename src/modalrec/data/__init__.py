"""Interactions, item tables, vocabularies, splits and sequence batches."""
