"""The deterministic synthetic model: echo, tokens, JSON schemas, embeddings, responder."""

from __future__ import annotations

import enum
import io
import re
from typing import Any, Literal

import orjson
import pydantic
import pytest
from google import genai

from gemini_batch_magic.emulator import Emulator, RequestError, _model

from .conftest import gen_line, jsonl, make_client, wait_done


class Color(str, enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(pydantic.BaseModel):
    street: str
    zip_code: str = pydantic.Field(min_length=5, max_length=5)


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=18, le=30)
    score: float = pydantic.Field(gt=0, lt=1)
    tags: list[str] = pydantic.Field(min_length=3)
    color: Color
    kind: Literal["a", "b"]
    home: Address
    previous: list[Address]
    nickname: str | None = None
    friend: Person | None = None


_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def _violations(value: Any, schema: Any, root: Any = None, path: str = "$") -> list[str]:
    """A small JSON Schema checker for the keywords the emulator generates for."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _violations(value, node, root, path)
    errs: list[str] = []
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: const")
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: enum")
    if "type" in schema:
        types_ = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        ok = any(
            isinstance(value, _TYPES[t.lower()])
            and not (t.lower() in ("integer", "number") and isinstance(value, bool))
            for t in types_
        )
        if not ok:
            errs.append(f"{path}: type {types_}")
    for sub in schema.get("allOf", []):
        errs += _violations(value, sub, root, path)
    if "anyOf" in schema and all(_violations(value, o, root, path) for o in schema["anyOf"]):
        errs.append(f"{path}: anyOf")
    if "oneOf" in schema:
        if sum(not _violations(value, o, root, path) for o in schema["oneOf"]) != 1:
            errs.append(f"{path}: oneOf")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errs += [f"{path}: missing {r}" for r in schema.get("required", []) if r not in value]
        for k, v in value.items():
            if k in props:
                errs += _violations(v, props[k], root, f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: extra {k}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", 1e9):
            errs.append(f"{path}: item count")
        prefix = schema.get("prefixItems", [])
        for i, v in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items", {})
            errs += _violations(v, sub, root, f"{path}[{i}]")
    if isinstance(value, str):
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1e9):
            errs.append(f"{path}: length")
        fmt = schema.get("format")
        if fmt == "date-time" and not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value):
            errs.append(f"{path}: date-time")
        if fmt == "email" and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", value):
            errs.append(f"{path}: email")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: minimum")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: maximum")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errs.append(f"{path}: exclusiveMinimum")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errs.append(f"{path}: exclusiveMaximum")
    return errs


def test_the_test_validator_catches_violations() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 3}},
        "required": ["n", "m"],
    }
    assert _violations({"n": 5}, schema) == ["$: missing m", "$.n: maximum"]


def _req(text: str, **gc: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"contents": [{"parts": [{"text": text}], "role": "user"}]}
    if gc:
        r["generationConfig"] = gc
    return r


def test_echo_uses_last_user_content_and_is_deterministic() -> None:
    req = {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "reply"}]},
            {"role": "user", "parts": [{"text": "second "}, {"text": "turn"}]},
        ],
        "systemInstruction": {"parts": [{"text": "sys"}]},
    }
    a = _model.default_generate(req, "gemini-2.5-flash", 3)
    assert a == _model.default_generate(req, "gemini-2.5-flash", 3)
    cand = a["candidates"][0]
    assert cand["content"] == {"parts": [{"text": "second turn"}], "role": "model"}
    assert cand["finishReason"] == "STOP" and cand["index"] == 0
    # tokens: ceil(bytes/4) of all text "first"+"reply"+"second turn"+"sys" = 24 bytes -> 6
    assert a["usageMetadata"] == {
        "promptTokenCount": 6,
        "candidatesTokenCount": 3,
        "totalTokenCount": 9,
    }
    assert a["modelVersion"] == "gemini-2.5-flash"
    assert len(a["responseId"]) == 16
    assert a["responseId"] != _model.default_generate(req, "gemini-2.5-flash", 4)["responseId"]


def test_token_rule_counts_utf8_bytes() -> None:
    assert _model.token_count("") == 0
    assert _model.token_count("abcd") == 1
    assert _model.token_count("abcde") == 2
    assert _model.token_count("é") == 1  # 2 bytes
    assert _model.token_count("日本語") == 3  # 9 bytes


def test_fail_marker_is_a_per_request_error() -> None:
    with pytest.raises(RequestError) as e:
        _model.default_generate(_req("please [[fail]] now"), "m")
    assert _model.error_dict(e.value) == {  # a google.rpc.Status: code 13 is INTERNAL
        "code": 13,
        "message": "Simulated failure ([[fail]] in prompt).",
    }


def test_pydantic_json_schema_output_is_valid_and_deterministic() -> None:
    schema = Person.model_json_schema()
    req = _req(
        "Describe Ada Lovelace", responseMimeType="application/json", responseJsonSchema=schema
    )
    text = _model.default_generate(req, "m")["candidates"][0]["content"]["parts"][0]["text"]
    assert text == _model.default_generate(req, "m")["candidates"][0]["content"]["parts"][0]["text"]
    person = Person.model_validate_json(text)
    assert "Describe Ada Lovelace" in person.name
    assert len(person.tags) >= 3 and len(set(person.tags)) == len(person.tags)
    other = _model.default_generate(
        _req("Something else", responseMimeType="application/json", responseJsonSchema=schema), "m"
    )["candidates"][0]["content"]["parts"][0]["text"]
    assert other != text
    assert _violations(orjson.loads(text), schema) == []


def test_openapi_response_schema_any_case_and_snake_case_config() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "title": {"type": "STRING"},
            "count": {"type": "INTEGER", "minimum": 3, "maximum": 5},
            "ratio": {"type": "number"},
            "ok": {"type": "BOOLEAN"},
            "items": {
                "type": "ARRAY",
                "items": {"type": "STRING", "enum": ["x", "y"]},
                "minItems": 1,
                "maxItems": 1,
            },
            "maybe": {"type": "STRING", "nullable": True},
        },
        "required": ["title", "count"],
        "propertyOrdering": ["title", "count"],
    }
    req = {
        "contents": [{"parts": [{"text": "hello"}]}],
        "generation_config": {"response_mime_type": "application/json", "response_schema": schema},
    }
    out = orjson.loads(
        _model.default_generate(req, "m")["candidates"][0]["content"]["parts"][0]["text"]
    )
    assert list(out)[:2] == ["title", "count"]
    assert out["title"] == "hello" and 3 <= out["count"] <= 5
    assert isinstance(out["ratio"], float) and isinstance(out["ok"], bool)
    assert len(out["items"]) == 1 and out["items"][0] in ("x", "y")


def test_json_schema_features_validate() -> None:
    schema = {
        "$defs": {
            "Leaf": {
                "type": "object",
                "properties": {"v": {"const": 7}},
                "required": ["v"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "choice": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Leaf"}]},
            "one": {"oneOf": [{"type": "integer", "exclusiveMinimum": 10}]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "string"}}},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ]
            },
            "when": {"type": "string", "format": "date-time"},
            "mail": {"type": "string", "format": "email"},
            "multi": {"type": ["string", "null"], "maxLength": 3},
            "tuple": {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
        },
        "required": ["choice", "one", "both", "when", "mail", "multi", "tuple"],
    }
    value = _model.json_for_schema(schema, "some prompt text")
    assert _violations(value, schema) == []
    assert value["choice"] == {"v": 7}
    assert value["one"] > 10


def test_json_without_schema_and_enum_mime() -> None:
    text = _model.answer_text(_req("q", responseMimeType="application/json"), "q")
    assert orjson.loads(text) == {"text": "q"}
    enum_text = _model.answer_text(
        _req(
            "q",
            responseMimeType="text/x.enum",
            responseSchema={"type": "STRING", "enum": ["pos", "neg"]},
        ),
        "q",
    )
    assert enum_text in ("pos", "neg")


def test_embedding_vectors_are_deterministic_unit_vectors() -> None:
    a = _model.default_embed({"content": {"parts": [{"text": "hello"}]}})
    b = _model.default_embed({"content": {"parts": [{"text": "hello"}]}})
    c = _model.default_embed({"content": {"parts": [{"text": "other"}]}, "outputDimensionality": 8})
    assert a == b
    assert len(a["embedding"]["values"]) == 768
    assert abs(sum(v * v for v in a["embedding"]["values"]) - 1.0) < 1e-4
    assert len(c["embedding"]["values"]) == 8
    assert a["tokenCount"] == "2"


def test_schema_answers_through_the_sdk(client: genai.Client) -> None:
    job = client.batches.create(
        model="gemini-2.5-flash",
        src=[
            {
                "contents": "Alan Turing",
                "metadata": {"key": "p"},
                "config": {
                    "response_mime_type": "application/json",
                    "response_json_schema": Person.model_json_schema(),
                },
            },
            {
                "contents": "Grace Hopper",
                "metadata": {"key": "q"},
                "config": {"response_mime_type": "application/json", "response_schema": Address},
            },
        ],
    )
    done = wait_done(client, job.name or "")
    assert done.dest is not None and done.dest.inlined_responses is not None
    by_key = {(r.metadata or {})["key"]: r.response for r in done.dest.inlined_responses}
    assert by_key["p"] is not None and by_key["q"] is not None
    assert "Alan Turing" in Person.model_validate_json(by_key["p"].text or "").name
    assert len(Address.model_validate_json(by_key["q"].text or "").zip_code) == 5


def test_custom_responder_and_its_errors(make_emu) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def responder(request: dict[str, Any], model: str) -> dict[str, Any]:
        text = request["contents"][0]["parts"][0]["text"]
        seen.append(model)
        if text == "boom":
            raise RuntimeError("custom explosion")
        if text == "quota":
            raise RequestError("too many", code=429, status="RESOURCE_EXHAUSTED")
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text.upper()}]},
                    "finishReason": "STOP",
                }
            ]
        }

    emu: Emulator = make_emu(responder=responder, shuffle=False)
    client = make_client(emu)
    src = client.files.upload(
        file=io.BytesIO(
            jsonl([gen_line("a", "hi"), gen_line("b", "boom"), gen_line("c", "quota")])
        ),
        config={"mime_type": "jsonl"},
    )
    done = wait_done(client, client.batches.create(model="gemini-x", src=src.name or "").name or "")
    assert done.dest is not None and done.dest.file_name is not None
    out = [orjson.loads(x) for x in client.files.download(file=done.dest.file_name).splitlines()]
    assert out[0]["response"]["candidates"][0]["content"]["parts"][0]["text"] == "HI"
    # google.rpc.Status: 13 INTERNAL, 8 RESOURCE_EXHAUSTED (no HTTP code, no status text)
    assert out[1]["error"] == {"code": 13, "message": "custom explosion"}
    assert out[2]["error"] == {"code": 8, "message": "too many"}
    assert seen == ["gemini-x"] * 3
