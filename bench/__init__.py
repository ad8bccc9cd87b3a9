"""The benchmark suite: our backend next to django-elastipymemcache, Django's ``PyMemcacheCache``
and Django's ``PyLibMCCache``, on the same local clusters, interleaved in one run.

Run it with ``scripts/bench.sh`` (installs what it needs) or ``python -m bench`` in the venv;
``--help`` lists the options. Modules:

* :mod:`bench.backends`: the four backends and the Django ``CACHES`` setting for them.
* :mod:`bench.workloads`: what is measured, and the checks that each backend really works.
* :mod:`bench.reference`: reference rows (a raw socket round trip, clients without Django).
* :mod:`bench.measure`: timing (wall and process CPU), calibration, medians.
* :mod:`bench.threads`: the persistent worker threads of the multi-threaded workload.
* :mod:`bench.pinning`: CPU affinity of the client and of the memcached servers.
* :mod:`bench.memory`: the peak-RSS check of a large ``get_many``, in a subprocess.
* :mod:`bench.greenlets`: the gevent rows, 50 greenlets in monkey-patched subprocesses
  (``bench/greenlets_child.py``), ours and pymemcache.
* :mod:`bench.environment`: what the report says about the machine and the software.
* :mod:`bench.report`: the markdown report and the targets.
* :mod:`bench.plot`: the PNG of a run (wall µs per workload, ours next to each alternative).
* :mod:`bench.run`: the command line and the interleaved run.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The repository's root: the working directory of the subprocesses the benchmark starts."""
