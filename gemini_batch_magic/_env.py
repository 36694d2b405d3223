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
    # a Jupyter kernel's shell, or a subclass of it (Google Colab's is ``Shell``)
    return shell is not None and any(
        cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)
