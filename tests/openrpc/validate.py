#!/usr/bin/env python3
"""Check an rpc.discover document and real answers against it.

validate.py META_SCHEMAS CASE_FILE

META_SCHEMAS is {"openrpc": the OpenRPC meta-schema (from
@open-rpc/meta-schema), "jsonschema": the JSON Schema meta-schema it refers
to as https://meta.json-schema.tools (from @json-schema-tools/meta-schema)},
both draft 7; nothing is fetched from the network.
CASE_FILE holds {"document": the rpc.discover result, "answers": [{"method",
"result"}], "notifications": [{"method", "notification", "params"}]}: each
answer is validated against its method's declared result schema, each
notification of a subscription against the method's x-subscription (its
method name, its params, the item in params.result), with $refs resolved in
the document.
Prints one line per problem and exits 1 if there is any.
"""

import json
import sys

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT7


def main():
    with open(sys.argv[1]) as f:
        metas = json.load(f)
    meta = metas["openrpc"]
    tools = DRAFT7.create_resource(metas["jsonschema"])
    registry = Registry().with_resources(
        [("https://meta.json-schema.tools", tools), ("https://meta.json-schema.tools/", tools)]
    )
    with open(sys.argv[2]) as f:
        case = json.load(f)
    doc = case["document"]
    problems = []

    # The meta-schema names its own dialect URI; it is draft 7.
    meta_validator = jsonschema.Draft7Validator(meta, registry=registry)
    for error in meta_validator.iter_errors(doc):
        path = "/".join(str(p) for p in error.absolute_path)
        problems.append(f"meta-schema: at /{path}: {error.message[:300]}")

    methods = {m["name"]: m for m in doc["methods"]}

    def check(method, schema, value, what):
        # The schema with the document's components beside it, so that
        # "#/components/schemas/..." resolves.
        root = {"allOf": [schema], "components": doc["components"]}
        validator = jsonschema.Draft7Validator(root)
        for error in validator.iter_errors(value):
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(f"{method} {what}: at /{path}: {error.message[:300]}")

    for answer in case["answers"]:
        method = methods.get(answer["method"])
        if method is None:
            problems.append(f"{answer['method']}: not in the document")
            continue
        check(answer["method"], method["result"]["schema"], answer["result"], "result")
    for sent in case["notifications"]:
        name = sent["method"]
        sub = methods.get(name, {}).get("x-subscription")
        if sub is None:
            problems.append(f"{name}: no x-subscription")
            continue
        if sent["notification"] != sub["notification"]:
            problems.append(f"{name}: notification {sent['notification']!r}, declared {sub['notification']!r}")
        check(name, sub["params"], sent["params"], "notification params")
        if "result" in sent["params"]:
            check(name, sub["item"], sent["params"]["result"], "item")

    for p in problems:
        print(p)
    print(f"checked {len(case['answers'])} answers and {len(case['notifications'])} notifications")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
