"""A minimal Django project served by gunicorn's gevent worker in
``tests/test_gunicorn_gevent.py``: its cache is our backend over a healthy node and a frozen
one, named (with the keys each holds) by the ``GEVENT_SITE`` environment variable (JSON)."""
