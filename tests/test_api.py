"""The public surface: exported names, lazy imports, the exception tree."""

from __future__ import annotations

import subprocess
import sys

import gemini_batch_magic as gbm
from gemini_batch_magic import exceptions


def test_public_names_are_pinned() -> None:
    assert sorted(gbm.__all__) == sorted([
        "BackendError", "BackendInfo", "BatchRun", "ColumnError", "ConfigError",
        "ConfirmationRequired", "RunNotDoneError",
        "CostLimitError", "DuplicateKeyError", "EmptyPromptError", "Estimate", "GemBatchError",
        "InputError", "PromptTypeError", "RequestTooLargeError", "RunNotFoundError", "RunStats",
        "Settings", "TableRun", "TemplateError", "WaitTimeout", "attach", "backend_info", "configure",
        "embed", "estimate", "estimate_file", "load_ipython_extension", "panel", "runs", "settings",
        "submit", "submit_file", "submit_table",
        "unload_ipython_extension",
    ])
    for name in gbm.__all__:
        assert hasattr(gbm, name), name


def test_importing_the_package_loads_no_magics_widgets_or_emulator() -> None:
    code = (
        "import sys, gemini_batch_magic\n"
        "bad = [m for m in ('ipywidgets', 'gemini_batch_magic._magics', "
        "'gemini_batch_magic.widgets', 'gemini_batch_magic.emulator', 'IPython') "
        "if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_error_is_a_gembatcherror_with_a_docstring() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.GemBatchError), name
        assert cls.__doc__ and cls.__doc__.strip(), name
        assert name in exceptions.__doc__, f"{name} missing from the drawn tree"
    # users can catch the builtin they expect
    assert issubclass(gbm.InputError, ValueError)
    assert issubclass(gbm.ColumnError, KeyError)
    assert issubclass(gbm.WaitTimeout, TimeoutError)
    assert str(gbm.ColumnError("no column 'x'")) == "no column 'x'"  # no KeyError quotes


def test_accessor_shows_the_engine_keywords() -> None:
    """``df.gembatch.submit?`` lists the same keywords and defaults as ``gbm.submit``."""
    import dataclasses
    import inspect

    import pandas as pd

    from gemini_batch_magic._options import RunOptions

    def params(fn: object, skip: int) -> list[tuple[str, object]]:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        return [(p.name, p.default) for p in list(sig.parameters.values())[skip:]]

    accessor = pd.DataFrame({"p": ["x"]}).gembatch
    assert params(accessor.submit, 0) == params(gbm.submit, 1)
    assert params(accessor.estimate, 0) == params(gbm.estimate, 1)
    assert params(accessor.run, 0)[:-2] == params(gbm.submit, 1)
    assert [n for n, _ in params(accessor.run, 0)[-2:]] == ["timeout", "join"]
    # the checked wrappers show the engine's own signature
    from gemini_batch_magic import _runs

    assert inspect.signature(gbm.submit) == inspect.signature(_runs.submit)
    assert inspect.signature(gbm.estimate) == inspect.signature(_runs.estimate)
    # the one declaration of the request options agrees with the engine's keywords
    options = [(f.name, f.default) for f in dataclasses.fields(RunOptions)]
    assert options == [p for p in params(gbm.submit, 2) if p[0] != "background"]
