"""The router's embedding task prefixes (nomic's search_query: / search_document:), on request
bodies as the router forwards them to vLLM."""

from app.registry.schema import ModelEntry
from app.serving.embed_prefixes import bad_input_type, with_prefix

NOMIC = {"query": "search_query: ", "document": "search_document: "}


def request(**fields):
    return {"model": "nomic", **fields}


def test_documents_by_default_queries_when_asked():
    assert with_prefix(request(input="a cat"), NOMIC)["input"] == "search_document: a cat"
    sent = with_prefix(request(input=["a", "b"], input_type="query"), NOMIC)
    assert sent["input"] == ["search_query: a", "search_query: b"]
    assert "input_type" not in sent  # ours, not vLLM's


def test_text_that_already_has_a_prefix_and_token_ids_are_left_alone():
    assert with_prefix(request(input="search_query: a cat"), NOMIC)["input"] == "search_query: a cat"
    assert with_prefix(request(input=[1, 2, 3]), NOMIC)["input"] == [1, 2, 3]
    assert with_prefix(request(input="a cat"), None) is None  # a model without prefixes: sent as it came
    assert with_prefix(request(input="a cat", input_type="query"), None) == request(input="a cat")


def test_a_bad_input_type_is_named():
    assert bad_input_type({"input_type": "search"}) == "input_type 'search' is not one of query, document"
    assert bad_input_type({}) is None


def test_prefixes_belong_to_embedding_models_only():
    entry = ModelEntry(id="e", source="org/m", task="embed", embed_prefixes=NOMIC)
    assert entry.embed_prefixes.query == "search_query: "
    try:
        ModelEntry(id="c", source="org/m", embed_prefixes=NOMIC)
    except ValueError as exc:
        assert "embed_prefixes is for task: embed models only" in str(exc)
    else:
        raise AssertionError("a chat model accepted embed_prefixes")
