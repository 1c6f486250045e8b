#!/usr/bin/python3
"""make_grammar_cases.py: test cases for the JSON Schema -> grammar compiler (shard/grammar.c),
labelled by an independent validator, the `jsonschema` package (Debian python3-jsonschema,
Draft 2020-12).

  /usr/bin/python3 tests/tools/make_grammar_cases.py > tests/fixtures/grammar/cases.json

For each schema: random instances generated in the form the grammar produces (compact JSON,
declared keys, moderate numbers), every one checked valid by jsonschema (-> the compiled
grammar must accept it), and mutations of them (dropped / extra / renamed keys, wrong
types, lengths and counts out of bounds, truncation, trailing bytes) that jsonschema finds
invalid (-> the grammar must reject them). Mutations that jsonschema still accepts are left
out. Plus schemas that must be refused, with the keyword the error has to name.
Deterministic (seeded).
"""
import importlib.metadata
import json
import random
import sys

import jsonschema

rng = random.Random(20261126)

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"id": {"type": "integer"}, "tags": {
        "type": "array", "items": {"type": "string", "maxLength": 5}, "minItems": 1, "maxItems": 3}},
     "required": ["id"]},
    {"type": "array", "items": {"type": "number"}, "maxItems": 4},
    {"type": "string", "minLength": 2, "maxLength": 4},
    {"enum": ["red", "green", "blue", 1, 12, None, True]},
    {"const": {"a": [1, 2]}},
    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    {"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
                "required": ["kind", "x"], "additionalProperties": False},
               {"type": "object", "properties": {"kind": {"const": "b"}, "y": {"type": "boolean"}},
                "required": ["kind", "y"], "additionalProperties": False}]},
    {"type": ["string", "null"]},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "object", "properties": {"inner": {"type": "object", "properties": {
        "deep": {"type": "array", "items": {"type": "object", "properties": {
            "v": {"type": "number"}}, "required": ["v"], "additionalProperties": False}}},
        "required": ["deep"], "additionalProperties": False}}, "required": ["inner"],
     "additionalProperties": False},
    {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                      "required": ["x", "y"], "additionalProperties": False}},
     "type": "object", "properties": {"a": {"$ref": "#/$defs/pt"}, "b": {"$ref": "#/$defs/pt"}},
     "required": ["a"], "additionalProperties": False},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": True},
    {"$defs": {"node": {"type": "object", "properties": {"val": {"type": "integer"}, "kids": {
        "type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["val"], "additionalProperties": False}}, "$ref": "#/$defs/node"},
    {"type": "array", "items": {"type": ["integer", "string", "boolean"]}, "minItems": 2, "maxItems": 2},
    {"type": "string", "maxLength": 3, "title": "annotations are ignored", "description": "x",
     "format": "email"},
    {"type": "object", "properties": {"é": {"type": "string", "minLength": 1}}, "required": ["é"],
     "additionalProperties": False},
    {"type": "integer"},
    {"type": "number"},
    {},
]

REFUSED = [
    ({"type": "string", "pattern": "^a"}, "pattern"),
    ({"type": "integer", "minimum": 3}, "minimum"),
    ({"type": "object", "properties": {"a": {"type": "string", "maximum": 3}}}, "maximum"),
    ({"allOf": [{"type": "string"}]}, "allOf"),
    ({"type": "array", "prefixItems": [{"type": "string"}]}, "prefixItems"),
    ({"$ref": "#/$defs/missing"}, "$ref"),
    ({"$ref": "http://example.com/s.json"}, "$ref"),
    ({"type": "strng"}, "strng"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "minItems"),
    ({"enum": []}, "enum"),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, "required"),
    ({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "$ref"),
    ({"not": {"type": "string"}}, "not"),
    ({"type": "string", "enum": [1, 2]}, "enum"),
    ({"if": {"type": "string"}}, "if"),
    ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
    ({"type": "object", "properties": {"a\"b": {}}}, "escaping"),
    (False, "false"),
]
# not JSON at all
REFUSED_TEXT = [("{\"type\": ", "not valid JSON"), ("", "not valid JSON")]

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-é€😀"


def resolve(schema, root):
    if isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if ref == "#":
            return resolve(root, root)
        return resolve(root["$defs"][ref.split("/")[-1]], root)
    return schema


def rand_string(lo=0, hi=None):
    hi = lo + 6 if hi is None else min(hi, lo + 6)
    n = rng.randint(lo, hi)
    s = "".join(rng.choice(ALNUM) for _ in range(n))
    if n and rng.random() < 0.2:  # an escape or two
        i = rng.randrange(n)
        s = s[:i] + rng.choice(["\"", "\\", "\n", "/", "\t"]) + s[i + 1:]
    return s


def gen(schema, root, depth=0):
    s = resolve(schema, root)
    if s is True or s == {} or (isinstance(s, dict) and not (set(s) - {"title", "description", "format", "$defs"})):
        return gen_any(depth)
    if "enum" in s:
        return rng.choice(s["enum"])
    if "const" in s:
        return s["const"]
    for kw in ("anyOf", "oneOf"):
        if kw in s:
            return gen(rng.choice(s[kw]), root, depth)
    t = s.get("type")
    if isinstance(t, list):
        t = rng.choice(t)
    if t is None:
        t = "object" if ("properties" in s or "additionalProperties" in s) else "any"
    if t == "object":
        props = s.get("properties", {})
        req = set(s.get("required", []))
        out = {}
        for k, v in props.items():
            if k in req or (rng.random() < 0.6 and depth < 4):
                out[k] = gen(v, root, depth + 1)
        ap = s.get("additionalProperties", None if props else True)
        if ap not in (None, False) and rng.random() < 0.6:
            for _ in range(rng.randint(1, 3)):
                k = "".join(ch for ch in rand_string(0, 6) if ch not in "\"\\\n\t")
                if k in props or k in out:
                    continue
                out[k] = gen_any(depth + 1) if ap is True else gen(ap, root, depth + 1)
        items = list(out.items())
        rng.shuffle(items)
        return dict(items)
    if t == "array":
        lo, hi = s.get("minItems", 0), s.get("maxItems", 4)
        if depth > 3:
            hi = lo
        return [gen(s.get("items", {}), root, depth + 1) for _ in range(rng.randint(lo, min(hi, lo + 4)))]
    if t == "string":
        return rand_string(s.get("minLength", 0), s.get("maxLength"))
    if t == "integer":
        return rng.choice([0, 1, -1, 7, 42, -300, 123456789])
    if t == "number":
        return rng.choice([0, 1.5, -2.25, 3e5, 1e-3, 7, -0.5, 12345.678])
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    return gen_any(depth)


def gen_any(depth):
    k = rng.randrange(7 if depth < 3 else 5)
    return [lambda: rand_string(), lambda: rng.randint(-99, 99), lambda: rng.random() < 0.5,
            lambda: None, lambda: 2.5,
            lambda: {"".join(ch for ch in rand_string(1, 4) if ch not in "\"\\\n\t"): gen_any(depth + 1)},
            lambda: [gen_any(depth + 1) for _ in range(rng.randint(0, 2))]][k]()


def dump(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def spaced(v):
    """The same value with a little whitespace (within the grammar's per-gap bound)."""
    return json.dumps(v, ensure_ascii=False, indent=1 if rng.random() < 0.5 else None)


def mutations(text, val):
    out = []
    if len(text) > 1:
        out.append(text[:-1])                       # truncated
        out.append(text[: rng.randrange(1, len(text))])
    out.append(text + " ")                          # trailing bytes
    out.append(text + "x")
    out.append(" " + text)                          # leading whitespace
    if isinstance(val, dict):
        if val:
            k = rng.choice(list(val))
            v2 = dict(val)
            del v2[k]
            out.append(dump(v2))                    # dropped key
            v2 = dict(val)
            v2[k] = [1, "x"]
            out.append(dump(v2))                    # wrong type
            out.append(text[:-1] + "," + dump(k) + ":1}")  # duplicate key
        v2 = dict(val)
        v2["zz_extra"] = 1
        out.append(dump(v2))                        # extra key
    elif isinstance(val, list):
        out.append(dump(val + [val[0] if val else 1]))
        out.append(dump(val + [{"q": 1}]))
        if val:
            out.append(dump(val[:-1]))
    elif isinstance(val, str):
        out.append(dump(val + "abcdefgh"))
        out.append(dump(val[:1]))
        out.append(dump(12))
    elif isinstance(val, bool) or val is None:
        out.append(dump("true"))
        out.append("tru")
    elif isinstance(val, (int, float)):
        out.append(dump(str(val)))
        out.append(dump(val) + ".5")
        out.append("01")
        out.append("1.")
        out.append("-")
    out.append("{\"a\":1,}")
    out.append("[1,]")
    out.append("\"\\ud800\"")
    out.append("\"a\x01b\"")
    return out


def in_language(text):
    """True if `text` parses as JSON (jsonschema's view of an instance)."""
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


cases = []
for schema in SCHEMAS:
    v = jsonschema.Draft202012Validator(schema)
    valid, invalid = [], []
    seen = set()
    for i in range(40):
        val = gen(schema, schema)
        literal = "enum" in json.dumps(schema) or "const" in json.dumps(schema)
        text = dump(val) if i % 4 or literal else spaced(val)
        if text in seen:
            continue
        seen.add(text)
        assert v.is_valid(val), (schema, text)
        valid.append(text)
        for m in mutations(dump(val), val):
            if m in seen:
                continue
            seen.add(m)
            if not in_language(m) or not v.is_valid(json.loads(m)):
                invalid.append(m)
    cases.append({"schema": json.dumps(schema, ensure_ascii=False), "valid": valid, "invalid": invalid})

refused = [{"schema": json.dumps(s), "keyword": k} for s, k in REFUSED]
refused += [{"schema": t, "keyword": k} for t, k in REFUSED_TEXT]
json.dump({"generator": "tests/tools/make_grammar_cases.py", "validator":
           f"jsonschema {importlib.metadata.version('jsonschema')} Draft202012Validator",
           "cases": cases, "refused": refused}, sys.stdout, ensure_ascii=False, indent=0)
sys.stdout.write("\n")
