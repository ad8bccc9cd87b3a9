"""A Django project with the admin and the status page, served for a real browser in
``tests/test_admin_status.py``. Its cache is our backend on the configuration endpoint given,
with the database and the users named by the ``ADMIN_SITE`` environment variable (JSON), and
its admin site the default one, or a hardened one (``"admin_site": "two-factor"``, see
``two_factor``)."""
