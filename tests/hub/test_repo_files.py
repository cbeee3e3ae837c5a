"""Which repo files a download fetches, and which names are refused."""

import pytest

from app.hub.repo_files import check_filename, select_files, weight_files

LLAMA_REPO = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
              "model-00002-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
              "original/consolidated.00.pth", "original/params.json", "onnx/model.onnx", "tokenizer.json",
              "tokenizer_config.json", "README.md", ".gitattributes"]


def test_safetensors_repo_skips_duplicate_weights_and_exports():
    assert select_files(LLAMA_REPO) == [
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json", "README.md", ".gitattributes"]
    assert weight_files(LLAMA_REPO) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]


def test_bin_only_repo_keeps_its_bin_weights():
    names = ["config.json", "pytorch_model.bin", "flax_model/flax_model.msgpack", "vocab.txt"]
    assert select_files(names) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    assert weight_files(names) == ["pytorch_model.bin"]


def test_repo_without_transformers_weights_keeps_everything():
    names = ["model-q4.gguf", "README.md"]
    assert select_files(names) == names


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", ""])
def test_unsafe_file_names_are_refused(name):
    with pytest.raises(ValueError):
        check_filename(name)


def test_nested_names_are_fine():
    assert check_filename("1_Pooling/config.json") == "1_Pooling/config.json"
