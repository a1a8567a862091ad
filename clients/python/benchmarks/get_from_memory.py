"""Times the client's reads from memory: prints JSON, ns per call (best of 5 runs of 200,000).

Usage: python get_from_memory.py http://127.0.0.1:8686  (a sidecar serving limits.max_items)
"""

import json
import sys
import timeit

from mycosynth import ConfigClient


def main() -> None:
    with ConfigClient(sys.argv[1]) as config:
        number = 200_000
        # Statements as an application writes them (attribute lookup and call included).
        reads = {
            "get": 'config.get("limits.max_items")',
            "get_default": 'config.get("limits.nothing", default=0)',
            "get_int_bounded": 'config.get_int("limits.max_items", min_val=1, max_val=1000)',
        }
        timings = {
            name: timeit.repeat(read, number=number, repeat=5, globals={"config": config})
            for name, read in reads.items()
        }
        figures = {name: round(min(t) / number * 1e9, 1) for name, t in timings.items()}
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
