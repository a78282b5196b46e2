"""Helpers shared by the tests (and a few bench scripts): fixture data trees, server processes, tiny runs."""
