"""Which front end we run under: a Jupyter kernel (JupyterLab, Notebook, VS Code, Colab) or not."""

from __future__ import annotations

import IPython
import pytest
from ipykernel.zmqshell import ZMQInteractiveShell

from gemini_batch_magic._env import in_notebook


def test_a_terminal_or_script_is_not_a_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert not in_notebook()


@pytest.mark.parametrize("name", ["ZMQInteractiveShell", "Shell"])
def test_a_kernel_shell_or_colabs_subclass_of_it_is_a_notebook(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    cls = ZMQInteractiveShell if name == "ZMQInteractiveShell" else type(
        "Shell", (ZMQInteractiveShell,), {})  # Google Colab's shell class is named Shell
    shell = cls.__new__(cls)
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert in_notebook()
