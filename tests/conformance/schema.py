#!/usr/bin/python3
"""docs/item.schema.json against `sluice submit --check`, item by item.

Every case of items.jsonl (the accepted and the refused corpus) is given to
`sluice submit --check` (the C validation, which the submit function
mirrors; nothing is written, no Redis) and to a real JSON Schema validator
(Debian's python3-jsonschema, Draft 2020-12) over the schema. They must
agree on each: both accept, or both refuse naming the same field. Text that
is not strict JSON (a key twice, NaN, a lone surrogate, invalid UTF-8,
nesting over 64, ...) has no JSON value for a schema to judge: the strict
parse here must refuse it, as the CLI does. A disagreement names the case.

usage: schema.py   (SLUICE_BIN names the sluice binary; exit 0 when all agree)
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA = os.path.join(HERE, "..", "..", "docs", "item.schema.json")
SLUICE = os.environ.get("SLUICE_BIN", "sluice")


class NotJSON(Exception):
    pass


def strict_loads(b):
    """The JSON value of b, as strictly as sluice reads it, or NotJSON."""
    try:
        text = b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise NotJSON("invalid UTF-8: %s" % e)
    if text.startswith("\ufeff"):
        raise NotJSON("a byte order mark")

    def pairs(kv):
        keys = [k for k, _ in kv]
        if len(set(keys)) != len(keys):
            raise NotJSON("a key given twice")
        return dict(kv)

    def constant(c):
        raise NotJSON("%s is not JSON" % c)

    try:
        v = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except ValueError as e:
        raise NotJSON(str(e))

    def walk(x, depth):
        if depth > 64:
            raise NotJSON("nesting over 64")
        if isinstance(x, str) and re.search("[\ud800-\udfff]", x):
            raise NotJSON("a lone surrogate")
        if isinstance(x, dict):
            for k, y in x.items():
                walk(k, depth)
                walk(y, depth + 1)
        elif isinstance(x, list):
            for y in x:
                walk(y, depth + 1)
    walk(v, 1)
    return v


def schema_verdict(validator, b):
    """('json', why), ('ok', None) or ('refused', field)."""
    try:
        v = strict_loads(b)
    except NotJSON as e:
        return "json", str(e)
    errors = sorted(validator.iter_errors(v), key=lambda e: (len(e.path), str(e.path)))
    if not errors:
        return "ok", None
    e = errors[0]
    if not isinstance(v, dict):
        return "refused", "object"
    if e.path:
        return "refused", e.path[0]
    if e.validator == "required":
        return "refused", re.match(r"'([^']+)' is a required property", e.message).group(1)
    if e.validator == "additionalProperties":
        return "refused", re.search(r"\('([^']+)' was unexpected\)", e.message).group(1)
    if e.validator == "not":
        return "refused", "delay_ms"   # run_at and delay_ms both given: sluice names the second
    return "refused", e.validator


def cli_verdict(b, tmp):
    """('ok', None), ('refused', field), ('json', message) from `sluice submit --check`."""
    path = os.path.join(tmp, "item.jsonl")
    with open(path, "wb") as f:
        f.write(b + b"\n")
    out = subprocess.run([SLUICE, "submit", "--check", path], capture_output=True, timeout=30)
    if out.returncode == 0:
        return "ok", None
    err = out.stderr.decode(errors="replace").splitlines()[0]
    m = re.search(r':1: field "([^"]+)": ', err)
    if m:
        return "refused", m.group(1)
    if "must be a JSON object" in err:
        return "refused", "object"
    if "invalid JSON" in err:
        return "json", err
    return "other", err


def main():
    schema = json.load(open(SCHEMA))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    cases = [json.loads(line) for line in open(os.path.join(HERE, "items.jsonl"), encoding="utf-8")]
    bad = []
    counts = {"ok": 0, "refused": 0, "json": 0}
    with tempfile.TemporaryDirectory(prefix="sluice-schema-") as tmp:
        for case in cases:
            if "line_hex" in case:
                b = bytes.fromhex(case["line_hex"])
            elif "line" in case:
                b = case["line"].encode()
            else:
                b = json.dumps(case["item"], ensure_ascii=False).encode()
            s, c = schema_verdict(validator, b), cli_verdict(b, tmp)
            if s != c and not (s[0] == "json" and c[0] == "json"):
                bad.append("%s: the schema says %s, sluice submit --check says %s" % (case["case"], s, c))
            else:
                counts[s[0]] += 1
    if bad:
        print("schema: %d of %d cases disagree:\n  %s" % (len(bad), len(cases), "\n  ".join(bad)), file=sys.stderr)
        return 1
    print("schema: %d cases, the schema and sluice submit --check agree on each: %d accepted, %d refused naming "
          "the same field, %d not strict JSON" % (len(cases), counts["ok"], counts["refused"], counts["json"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
