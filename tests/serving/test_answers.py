"""What :8000 makes of an error answer of a model's own vLLM app (app/serving/answers.py)."""

import json

from app.serving.answers import from_engine_answer


def answer(status: int, payload) -> dict:
    response = from_engine_answer("chat", status, json.dumps(payload).encode(), "/v1/embeddings")
    return {"status": response.status_code, **json.loads(response.body)["error"]}


def test_a_bad_request_keeps_its_status_and_param_and_names_the_model():
    got = answer(400, {"error": {"message": "max_tokens must be at least 1", "type": "Bad Request",
                                 "param": "max_tokens", "code": 400}})
    assert got == {"status": 400, "message": "model 'chat': max_tokens must be at least 1",
                   "type": "invalid_request_error", "param": "max_tokens", "code": "400"}


def test_a_route_the_models_task_has_not_says_so():
    got = answer(404, {"detail": "Not Found"})
    assert got["message"] == "model 'chat': /v1/embeddings is not served for this model's task"


def test_a_server_error_is_503_model_error_with_the_engines_words_cleaned():
    response = from_engine_answer("chat", 500, json.dumps({"error": {
        "message": "Traceback (most recent call last):\n  File \"/x/y.py\", line 1, in z\n"
                   "EngineDeadError: EngineCore encountered an issue.", "type": "InternalServerError",
        "code": 500}}).encode())
    body = json.loads(response.body)["error"]
    assert (response.status_code, body["code"], response.headers["retry-after"]) == (503, "model_error", "2")
    assert body["message"] == "model 'chat' failed while answering: EngineDeadError: EngineCore encountered an issue."


def test_an_answer_that_is_not_json_is_still_an_openai_error():
    response = from_engine_answer("chat", 422, b"<html>nope</html>")
    assert response.status_code == 422 and json.loads(response.body)["error"]["message"] == "model 'chat': <html>nope</html>"
