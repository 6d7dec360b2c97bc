"""``python -m bench``: see :mod:`bench.mesh`."""

from __future__ import annotations

from bench.mesh import main

if __name__ == "__main__":
    main()
