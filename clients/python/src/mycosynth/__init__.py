"""Read Mycosynth configuration in Python, through the local sidecar (``mycosynth sidecar``).

>>> from mycosynth import ConfigClient                      # doctest: +SKIP
>>> config = ConfigClient()                                 # doctest: +SKIP
>>> config.get_int("database.pool_size", min_val=1, max_val=200)  # doctest: +SKIP
50

Reads come from an in-memory copy that a background thread keeps current from the sidecar's
change stream; they never touch the network.
"""

from mycosynth.client import DEFAULT_URL, Change, ConfigClient

__all__ = ["Change", "ConfigClient", "DEFAULT_URL"]
__version__ = "0.1.0"
