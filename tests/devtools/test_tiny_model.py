"""Behaviour of the tiny test-model generator (app.devtools.tiny_model)."""

import json

import pytest
import transformers

from app.devtools.tiny_model import make_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_loads_in_transformers_and_generates(model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.head_dim == 32  # vLLM's CPU attention rejects head_dim 16
    assert len(tok) == model.config.vocab_size
    inputs = tok("hello world", return_tensors="pt")
    assert inputs.input_ids[0, 0].item() == tok.bos_token_id
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    new = out[0, inputs.input_ids.shape[1]:]
    assert len(new) == 5
    assert isinstance(tok.decode(new), str)


def test_tokenizer_round_trips_text(model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    text = "The server sends 42 replies, héllo ✓"
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_chat_template_renders_conversation(model_dir):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Bye"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<s><|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nHi there<|im_end|>\n"
                    "<|im_start|>assistant\nHello<|im_end|>\n"
                    "<|im_start|>user\nBye<|im_end|>\n"
                    "<|im_start|>assistant\n")
    without = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert not without.endswith("<|im_start|>assistant\n")
    # Role markers are single special tokens, not split into byte pieces.
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 5


def test_generation_config_stops_on_end_of_turn(model_dir):
    gen = json.loads((model_dir / "generation_config.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert set(gen["eos_token_id"]) == {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path, model_dir):
    again = make_tiny_model(tmp_path / "again", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (model_dir / name).read_bytes()
        assert (other / name).read_bytes() != (model_dir / name).read_bytes()


def test_existing_model_is_reused_and_other_seed_rebuilds(tmp_path):
    out = make_tiny_model(tmp_path / "m", seed=3)
    weights = out / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert make_tiny_model(out, seed=3) == out
    assert weights.stat().st_mtime_ns == mtime  # skipped, not rewritten
    make_tiny_model(out, seed=4)
    assert json.loads((out / "llmbox_tiny_model.json").read_text())["seed"] == 4


def test_incomplete_dir_is_regenerated(tmp_path):
    out = make_tiny_model(tmp_path / "m", seed=0)
    (out / "model.safetensors").unlink()
    make_tiny_model(out, seed=0)
    assert (out / "model.safetensors").is_file()
