"""Drive a running vidproxy and hold every answer against ``vidproxy/web/openapi.json``.

A ``Probe`` sends a request for one documented operation (a path template and a
method), records ``(template, method, status)``, and checks the answer the way a
client generated from the document would read it: the status is listed for that
operation, the headers marked ``required`` are there and fit their schemas, the
media type is one the document names, and a JSON body validates against its
schema. What does not fit is collected in ``problems`` rather than raised, so one
run reports every mismatch at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient
from conftest import Connect
from jsonschema import Draft202012Validator

Client = TestClient[Any, Any]
Document = dict[str, Any]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
NO_BODY_STATUSES = (204, 304)


def load_document() -> Document:
    text = resources.files("vidproxy.web").joinpath("openapi.json").read_text(encoding="utf-8")
    document: Document = json.loads(text)
    return document


def operations(doc: Document) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(path template, METHOD, operation)`` for every documented operation."""
    for template, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield template, method.upper(), operation


def resolve(doc: Document, node: dict[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref``s (``#/components/...``) to the object they name."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


# A tus upload id (a ULID) that names no upload, for templates with {upload_id}.
UPLOAD_ID = "01JD0000000000000000000000"


def expand(template: str, key: str | None) -> str:
    if "{upload_id}" in template:
        # A key argument that is a ULID names an upload; any other stands for none.
        upload_id = key if key and len(key) == 26 and key.isalnum() else UPLOAD_ID
        return template.replace("{upload_id}", upload_id)
    if "{key}" not in template:
        return template
    assert key is not None, f"{template} needs a key"
    return template.replace("{key}", quote(key, safe="/"))


def is_public(doc: Document, operation: dict[str, Any]) -> bool:
    return operation.get("security", doc.get("security")) == []


@dataclass
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Probe:
    doc: Document
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)

    async def send(
        self,
        client: Client,
        method: str,
        template: str,
        key: str | None = None,
        *,
        expect: int,
        code: str | None = None,
        **kwargs: Any,
    ) -> Answer:
        """One request through aiohttp's client; ``kwargs`` go to ``client.request``."""
        kwargs.setdefault("allow_redirects", False)
        async with client.request(method, expand(template, key), **kwargs) as response:
            answer = Answer(response.status, response.headers, await response.read())
        self.check(template, method, answer, expect, code)
        return answer

    async def send_raw(
        self,
        connect: Connect,
        client: Client,
        method: str,
        template: str,
        key: str | None = None,
        *,
        headers: dict[str, str],
        body: bytes = b"",
        expect: int,
        code: str | None = None,
    ) -> Answer:
        """One request written byte by byte, for what aiohttp's client would fix up."""
        connection = await connect(client)
        await connection.send_head(method, expand(template, key), headers)
        if body:
            await connection.send(body)
        raw = await connection.response(head=method == "HEAD")
        answer = Answer(raw.status, raw.headers, raw.body)
        self.check(template, method, answer, expect, code)
        return answer

    def check(
        self, template: str, method: str, answer: Answer, expect: int, code: str | None
    ) -> None:
        self.seen.add((template, method, answer.status))
        where = f"{method} {template} -> {answer.status}"
        if answer.status != expect:
            self.problems.append(f"{where}: expected {expect}: {answer.body[:200]!r}")
        operation = self.doc["paths"][template][method.lower()]
        documented = operation["responses"].get(str(answer.status))
        if documented is None:
            self.problems.append(f"{where}: status not documented")
            return
        response = resolve(self.doc, documented)
        self.problems += [f"{where}: {p}" for p in self._header_problems(response, answer)]
        self.problems += [f"{where}: {p}" for p in self._body_problems(method, response, answer)]
        if code is not None and method != "HEAD" and _error_code(answer) != code:
            self.problems.append(f"{where}: expected error {code!r}: {answer.body[:200]!r}")

    def _header_problems(self, response: dict[str, Any], answer: Answer) -> list[str]:
        found = []
        for name, node in response.get("headers", {}).items():
            header = resolve(self.doc, node)
            value = answer.headers.get(name)
            if value is None:
                if header.get("required"):
                    found.append(f"required header {name} missing")
                continue
            schema = header.get("schema", {})
            instance: Any = int(value) if schema.get("type") == "integer" else value
            found += [f"header {name}: {e.message}" for e in self.schema_errors(schema, instance)]
        return found

    def _body_problems(self, method: str, response: dict[str, Any], answer: Answer) -> list[str]:
        content = response.get("content")
        if method == "HEAD" or answer.status in NO_BODY_STATUSES:
            return [f"unexpected body {answer.body[:80]!r}"] if answer.body else []
        if not content:
            return [f"undocumented body {answer.body[:80]!r}"] if answer.body else []
        media = answer.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        kind = media.partition("/")[0]
        documented = next((m for m in (media, f"{kind}/*", "*/*") if m in content), None)
        if documented is None:
            return [f"media type {media!r} is not among {sorted(content)}"]
        if documented != "application/json":
            return []
        try:
            body = json.loads(answer.body)
        except ValueError:
            return [f"body is not JSON: {answer.body[:80]!r}"]
        schema = content[documented].get("schema", {})
        return [f"body: {e.message}" for e in self.schema_errors(schema, body)]

    def schema_errors(self, schema: dict[str, Any], instance: Any) -> list[Any]:
        # The schema is checked as part of a document holding the components, so
        # its "#/components/schemas/..." references resolve.
        root = {"components": self.doc["components"], **schema}
        return list(Draft202012Validator(root).iter_errors(instance))

    def unreached(self) -> list[str]:
        """Documented ``(template, METHOD, status)`` that no request produced."""
        missing = []
        for template, method, operation in operations(self.doc):
            for status in operation["responses"]:
                if status != "default" and (template, method, int(status)) not in self.seen:
                    missing.append(f"{method} {template} {status}")
        return missing


def _error_code(answer: Answer) -> Any:
    try:
        return answer.json().get("error")
    except (ValueError, AttributeError):
        return None
