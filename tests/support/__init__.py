"""Reusable helpers for the test suite (e.g. a throwaway memcached server)."""
