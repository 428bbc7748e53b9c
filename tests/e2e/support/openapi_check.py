"""Validates an OpenAPI document with openapi-spec-validator, then sends one request generated
from it to the running flow and checks the answer against the document.

usage: openapi_check.py DOC.json BASE_URL PATH METHOD TOKEN
Prints one JSON line with what it checked; exits 1 (with the reason on stderr) on a mismatch.
"""

import json
import sys
import urllib.error
import urllib.request

import jsonschema
from openapi_spec_validator import validate


def resolve(doc, schema):
    """The schema with its `#/components/...` references replaced by what they point to."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target = doc
            for part in ref[2:].split("/"):
                target = target[part]
            return resolve(doc, target)
        return {k: resolve(doc, v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [resolve(doc, v) for v in schema]
    return schema


def example(schema):
    """A value the schema accepts: its first example, else one built from its types."""
    if schema.get("examples"):
        return schema["examples"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: example(props.get(name, {})) for name in schema.get("required", [])}
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True,
            "array": []}.get(kind)


def send(base, path, method, body, headers):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method.upper())
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check_answer(doc, operation, status, raw):
    answers = operation["responses"]
    if str(status) not in answers:
        sys.exit(f"status {status} is not among the documented responses {sorted(answers)}")
    content = answers[str(status)].get("content")
    if content is None:
        return None
    body = json.loads(raw)
    schema = resolve(doc, content["application/json"]["schema"])
    jsonschema.validate(body, schema, format_checker=jsonschema.FormatChecker())
    return body


def main():
    doc_path, base, path, method, token = sys.argv[1:6]
    with open(doc_path) as f:
        doc = json.load(f)
    validate(doc)
    operation = doc["paths"][path][method]
    url_path = path
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            url_path = url_path.replace("{" + parameter["name"] + "}", "KETTLE-1")
    headers = {"Content-Type": "application/json"}
    for requirement in operation.get("security", []):
        for name in requirement:
            scheme = doc["components"]["securitySchemes"][name]
            if scheme["type"] == "http" and scheme["scheme"] == "bearer":
                headers["Authorization"] = "Bearer " + token
    schema = resolve(doc, operation["requestBody"]["content"]["application/json"]["schema"])
    body = example(schema)
    status, raw = send(base, url_path, method, body, headers)
    answered = check_answer(doc, operation, status, raw)
    if not 200 <= status < 300:
        sys.exit(f"the generated request got {status}: {raw!r}")
    # A body the contract refuses: the documented 422 error shape.
    bad_status, bad_raw = send(base, url_path, method, {}, headers)
    refused = check_answer(doc, operation, bad_status, bad_raw)
    # Without credentials: the documented 401.
    anonymous = {k: v for k, v in headers.items() if k != "Authorization"}
    auth_status, auth_raw = send(base, url_path, method, body, anonymous)
    check_answer(doc, operation, auth_status, auth_raw)
    print(json.dumps({"valid": True, "request": {"path": url_path, "body": body},
                      "status": status, "answer": answered,
                      "refused": [bad_status, refused], "anonymous": auth_status}))


main()
