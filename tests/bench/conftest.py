"""The tests here import the repository's ``bench`` package, not this directory."""

from __future__ import annotations

import sys

from meshtest import REPO_ROOT

if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))
