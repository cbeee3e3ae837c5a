"""No internals reach a client: ``clean`` keeps the engine's own words and drops the rest."""

import pytest

from app.openai_errors import clean

RAY = ("\x1b[36mray::ServeReplica:model-a:model.chat()\x1b[39m (pid=12345, ip=127.0.0.1, "
       "actor_id=6099311916ced9bc19033bb901000000, repr=<ServeReplica object>)\n"
       "Traceback (most recent call last):\n  File \"/x/async_llm.py\", line 1, in generate\n    raise X\n"
       "    ^^^^^^^\n"
       "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.")
PYDANTIC = ("pydantic_core._pydantic_core.ValidationError: 1 validation error for LLMConfig\ndeployment_config\n"
            "  Value error, Invalid deployment config: {'num_replicas': 1} [type=value_error, input_value={}, "
            "input_type=dict]\n    For further information visit https://errors.pydantic.dev/2.14/v/value_error")


@pytest.mark.parametrize("raw, expected", [
    (RAY, "EngineDeadError: EngineCore encountered an issue."),
    (PYDANTIC, "Invalid deployment config: {'num_replicas': 1}"),
    ("\x1b[31mRuntimeError: weights not found\x1b[0m", "RuntimeError: weights not found"),
    ("The actor 44e57458e878f2ce713e073f01000000 is unavailable (pid=99)", "The actor is unavailable"),
    ("", "unknown error"),
    ("x" * 2000, "x" * 500),
])
def test_clean_keeps_the_engines_words_only(raw, expected):
    assert clean(raw) == expected
