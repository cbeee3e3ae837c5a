"""Task prefixes some embedding models were trained with (nomic-embed: ``search_query: `` for
queries, ``search_document: `` for documents), added by the router so clients need not know.

The request may say which kind of text it sends with ``input_type`` (``query`` or ``document``,
the field Cohere's and Voyage's APIs use; an OpenAI client passes it as ``extra_body``). Without
it the text is taken as a document: what RAG pipelines such as OpenWebUI embed most. A text that
already starts with one of the model's prefixes is left as it is; token-id inputs are never changed.
"""

from __future__ import annotations

from typing import Any

INPUT_TYPES = ("query", "document")


def bad_input_type(body: dict[str, Any]) -> str | None:
    """Why the request's ``input_type`` is not accepted, or None."""
    value = body.get("input_type")
    if value is None or value in INPUT_TYPES:
        return None
    return f"input_type {value!r} is not one of {', '.join(INPUT_TYPES)}"


def with_prefix(body: dict[str, Any], prefixes: dict[str, str] | None) -> dict[str, Any] | None:
    """The embeddings request body with the model's prefix on each text input and without our
    ``input_type`` (see the module docstring); None when the body goes as it came."""
    if not prefixes and "input_type" not in body:
        return None
    body = dict(body)
    input_type = body.pop("input_type", None) or "document"
    if not prefixes:
        return body
    prefix = prefixes.get(input_type) or ""
    known = tuple(p for p in prefixes.values() if p)

    def add(text: str) -> str:
        return text if not prefix or text.startswith(known) else prefix + text

    inputs = body.get("input")
    if isinstance(inputs, str):
        body["input"] = add(inputs)
    elif isinstance(inputs, list) and inputs and all(isinstance(i, str) for i in inputs):
        body["input"] = [add(i) for i in inputs]
    return body
