"""Python tests for django-elasticache-rs (a package so ``tests.settings`` etc. import)."""
