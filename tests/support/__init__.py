"""Test support: fake servers for faults real memcached cannot produce."""
