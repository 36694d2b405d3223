"""Hostile and odd input: each case either round-trips exactly (answers aligned to their own
rows) or fails *before anything is sent or written*, with an error naming the problem.

"Nothing happened" means: no API call reached the service, ``gbm.runs()`` is empty and the
registry's ``runs/`` folder holds no file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import gemini_batch_magic as gbm

from ._util import nothing_happened

Case = tuple[str, Callable[[], Any], dict[str, Any], Any]

LONG_KEY = "k" * 100_000
EMOJI = "👩‍👩‍👧 שָׁלוֹם مرحبا e\u0301 \u202eevil\u202c \u200d\ufeff"


def _mi() -> pd.MultiIndex:
    return pd.MultiIndex.from_tuples(
        [("x" * 50_000, i, pd.Timestamp("2024-01-01", tz="Asia/Kolkata")) for i in range(3)],
        names=["big", "n", "when"],
    )


# (id, DataFrame factory, submit kwargs, expected): expected is the list of answers for a
# case that must work, or (exception class, text the message must contain) for one that
# must be refused before sending.
OK_CASES: list[Case] = [
    ("nul bytes", lambda: pd.DataFrame({"p": ["a\x00b", "\x00", "end\x00"]}), {"prompt": "p"},
     ["a\x00b", "\x00", "end\x00"]),
    ("emoji rtl combining", lambda: pd.DataFrame({"p": [EMOJI, EMOJI[::-1]]}), {"prompt": "p"},
     [EMOJI, EMOJI[::-1]]),
    ("json and jsonl breakers", lambda: pd.DataFrame(
        {"p": ['"}], "model": "x', "line\nbreak\r\n", "sep\u2028\u2029", "\\u0000 \\"]}),
     {"prompt": "p"}, ['"}], "model": "x', "line\nbreak\r\n", "sep\u2028\u2029", "\\u0000 \\"]),
    ("10 MB cell", lambda: pd.DataFrame({"p": ["é" * 5_000_000, "small"]}), {"prompt": "p"},
     ["é" * 5_000_000, "small"]),
    ("braces in column name", lambda: pd.DataFrame({"{a}": ["x", "y"]}), {"prompt": "{a}"},
     ["x", "y"]),
    ("literal braces in template", lambda: pd.DataFrame({"t": ["x"]}),
     {"template": "{{t}} is {t} {{0}}"}, ["{t} is x {0}"]),
    ("template values holding braces", lambda: pd.DataFrame({"t": ["{t.__class__}", "{0}"]}),
     {"template": "say {t}"}, ["say {t.__class__}", "say {0}"]),
    ("categorical strings", lambda: pd.DataFrame({"p": pd.Categorical(["b", "a", "b"])}),
     {"prompt": "p"}, ["b", "a", "b"]),
    ("arrow strings", lambda: pd.DataFrame({"p": pd.array(["x", "y"], dtype="string[pyarrow]")}),
     {"prompt": "p"}, ["x", "y"]),
    ("python strings dtype", lambda: pd.DataFrame({"p": pd.array(["x", "y"], dtype="string")}),
     {"prompt": "p"}, ["x", "y"]),
    ("huge multiindex keys", lambda: pd.DataFrame({"p": ["a", "b", "c"]}, index=_mi()),
     {"prompt": "p"}, ["a", "b", "c"]),
    ("very long key column", lambda: pd.DataFrame({"p": ["a", "b"], "id": [LONG_KEY, LONG_KEY + "2"]}),
     {"prompt": "p", "key": "id"}, ["a", "b"]),
    ("mixed-type object index", lambda: pd.DataFrame({"p": ["a", "b", "c"]},
                                                     index=pd.Index([1, "1", (1,)], dtype=object)),
     {"prompt": "p"}, ["a", "b", "c"]),
    ("name with path and newline", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "name": "../../etc/passwd\nx"}, ["a"]),
    ("system instruction with nul", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "system_instruction": "be \x00 brief"}, ["a"]),
]

BAD_CASES: list[Case] = [
    ("lone surrogate", lambda: pd.DataFrame({"p": pd.Series(["ok", "bad \ud800"], dtype=object)}), {"prompt": "p"},
     (gbm.InputError, "1")),
    ("format attribute injection", lambda: pd.DataFrame({"text": ["a"]}),
     {"template": "{text.__class__}"}, (gbm.TemplateError, "text.__class__")),
    ("format index injection", lambda: pd.DataFrame({"text": ["a"]}),
     {"template": "{text[0]}"}, (gbm.TemplateError, "text[0]")),
    ("positional field", lambda: pd.DataFrame({"text": ["a"]}), {"template": "{0}"},
     (gbm.TemplateError, "0")),
    ("empty field", lambda: pd.DataFrame({"text": ["a"]}), {"template": "{}"},
     (gbm.TemplateError, "{}")),
    ("conversion", lambda: pd.DataFrame({"text": ["a"]}), {"template": "{text!r}"},
     (gbm.TemplateError, "!r")),
    ("nested format spec", lambda: pd.DataFrame({"text": ["a"], "other": ["5"]}),
     {"template": "{text:{other}}"}, (gbm.TemplateError, "other")),
    ("unbalanced brace", lambda: pd.DataFrame({"text": ["a"]}), {"template": "{text"},
     (gbm.TemplateError, "{")),
    ("object column of dicts", lambda: pd.DataFrame({"p": [{"a": 1}, {"b": 2}]}),
     {"prompt": "p"}, (gbm.PromptTypeError, "dict")),
    ("dict in template", lambda: pd.DataFrame({"t": [{"a": 1}]}), {"template": "x {t}"},
     (gbm.PromptTypeError, "json")),
    ("non-utf8 bytes", lambda: pd.DataFrame({"p": [b"\xff\xfe", b"ok"]}), {"prompt": "p"},
     (gbm.PromptTypeError, "bytes")),
    ("zero columns", lambda: pd.DataFrame(index=range(3)), {"prompt": "p"},
     (gbm.InputError, "no columns")),
    ("zero columns template", lambda: pd.DataFrame(index=range(3)), {"template": "hi {p}"},
     (gbm.InputError, "no columns")),
    ("nan in key column", lambda: pd.DataFrame({"p": ["a", "b"], "id": ["x", np.nan]}),
     {"prompt": "p", "key": "id"}, (gbm.InputError, "id")),
    ("none in key column", lambda: pd.DataFrame({"p": ["a", "b"], "id": [None, "y"]}),
     {"prompt": "p", "key": "id"}, (gbm.InputError, "id")),
    ("duplicated column names", lambda: pd.DataFrame([["a", "b"]], columns=["p", "p"]),
     {"prompt": "p"}, (gbm.ColumnError, "p")),
    ("series not frame", lambda: pd.Series(["a", "b"], name="p"), {"prompt": "p"},
     (gbm.InputError, "Series")),
    ("list of dicts", lambda: [{"p": "a"}], {"prompt": "p"}, (gbm.InputError, "DataFrame")),
    ("index with two nan", lambda: pd.DataFrame({"p": ["a", "b"]}, index=[np.nan, np.nan]),
     {"prompt": "p"}, (gbm.InputError, "missing key")),
    ("bool prompts", lambda: pd.DataFrame({"p": [True, False]}), {"prompt": "p"},
     (gbm.PromptTypeError, "bool")),
    ("float prompts", lambda: pd.DataFrame({"p": [1.5, 2.5]}), {"prompt": "p"},
     (gbm.PromptTypeError, "astype")),
    ("model path traversal", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "model": "models/../../v1/files"}, (gbm.ConfigError, "models/../")),
    ("model with query", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "model": "gemini?key=x"}, (gbm.ConfigError, "gemini?key=x")),
    ("non-json generation config", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "generation_config": {"stop_sequences": {1, 2}}}, (gbm.ConfigError, "JSON")),
    ("blank system instruction", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "system_instruction": " \n"}, (gbm.ConfigError, "system_instruction")),
    ("empty name", lambda: pd.DataFrame({"p": ["a"]}), {"prompt": "p", "name": ""},
     (gbm.ConfigError, "name")),
    ("prompt and template", lambda: pd.DataFrame({"p": ["a"]}),
     {"prompt": "p", "template": "{p}"}, (gbm.InputError, "template")),
    ("unhashable key values", lambda: pd.DataFrame({"p": ["a", "b"], "id": [[1], [2]]}),
     {"prompt": "p", "key": "id"}, (gbm.InputError, "unhashable")),
]


@pytest.mark.parametrize("case", OK_CASES, ids=[c[0] for c in OK_CASES])
def test_odd_input_round_trips_exactly(emu: Any, case: Case) -> None:
    _, make, kwargs, expected = case
    df = make()
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", None)
    run = gbm.submit(df, prompt, **kwargs)
    out = run.wait(progress=False).result()
    assert out.index.equals(df.index)
    assert out["error"].isna().all(), out["error"].tolist()
    assert out["response"].tolist() == expected


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_refused_before_anything_is_sent(
    emu: Any, gembatch_home: Path, case: Case
) -> None:
    _, make, kwargs, (error, text) = case
    kwargs = dict(kwargs)
    prompt = kwargs.pop("prompt", None)
    with pytest.raises(error) as info:
        gbm.submit(make(), prompt, **kwargs)
    message = str(info.value)
    assert text.lower() in message.lower(), message
    assert "Traceback" not in message and len(message) < 2_000
    nothing_happened(emu, gembatch_home)
