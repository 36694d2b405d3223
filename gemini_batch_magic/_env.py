"""What kind of front end this process runs under (a leaf module: no package imports)."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["in_notebook"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where widgets can render)."""
    ip: Any = sys.modules.get("IPython")
    if ip is None:
        return False
    shell = ip.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
