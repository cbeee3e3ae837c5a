"""Fuzzing :8000's routes in-process (real router code and manager, fake replicas): whatever a client
sends, the answer is never a 500 and every error is in the OpenAI shape."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lifecycle.fakes import use
from tests.serving.test_router import box  # noqa: F401 - the router fixture

ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/models/load", "/models/unload",
          "/v1/models", "/v1/models/a", "/metrics", "/health", "/v1/nowhere"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
FIELDS = st.fixed_dictionaries({}, optional={
    "model": st.one_of(st.sampled_from(["a", "hidden", "ghost", ""]), JSON_VALUES),
    "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), JSON_VALUES),
    "prompt": st.one_of(st.just("hi"), JSON_VALUES), "input": st.one_of(st.just("hi"), JSON_VALUES),
    "stream": JSON_VALUES, "n": JSON_VALUES, "max_tokens": JSON_VALUES, "temperature": JSON_VALUES,
    "input_type": JSON_VALUES, "logprobs": JSON_VALUES, "stop": JSON_VALUES})
BODIES = st.one_of(FIELDS.map(lambda d: json.dumps(d).encode()), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                   st.binary(max_size=64))


@given(route=st.sampled_from(ROUTES), method=st.sampled_from(["POST", "GET", "PUT"]), body=BODIES,
       kind=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
       auth=st.sampled_from([None, "Bearer x", "Basic abc", "Bearer "]))
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_500_and_errors_keep_the_openai_shape(box, route, method, body, kind, auth):
    client = box[0]
    headers = {k: v for k, v in (("content-type", kind), ("authorization", auth)) if v}
    response = client.request(method, route, content=body, headers=headers)
    assert response.status_code < 500 or response.status_code == 503, (route, body, response.text[:300])
    if response.status_code >= 400 and route != "/metrics":
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["type"] and error["code"], response.text[:300]
        assert "Traceback" not in error["message"] and "\x1b[" not in error["message"]


def test_the_fuzzer_reaches_the_model(box):
    """The strategies above can produce a request that is answered: the fuzz is not all refusals."""
    client, manager = box[0], box[1]
    client.portal.call(use, manager, "a")
    response = client.post("/v1/chat/completions", content=json.dumps(
        {"model": "a", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200
