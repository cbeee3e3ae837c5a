"""Generate a tiny, random-weight LLaMA model for tests and local development.

Real checkpoints cannot be downloaded on the build machines (the Hugging Face hub is
unreachable), yet the serving stack (transformers, vLLM, Ray Serve) needs a genuine
model directory to load. This module writes one in seconds: a LlamaForCausalLM with
random weights, a byte-level BPE tokenizer trained locally on generated text, a
ChatML-like chat template and a generation config. Its output is meaningless text,
but every code path that loads, tokenizes, templates and generates is exercised.

Usage: python -m app.devtools.tiny_model OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

# Bump when the output for a given seed changes, so stale directories get rebuilt.
GENERATOR_VERSION = 1
MARKER = "llmbox_tiny_model.json"
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "chat_template.jinja", MARKER)
VOCAB_SIZE = 1024
BOS, EOS, PAD, IM_START, IM_END = "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"
SPECIALS = [PAD, BOS, EOS, IM_START, IM_END]  # listed first, so ids are 0..4 for every seed
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ("the a an and or but if then when model token server request reply user system "
         "assistant hello world box llm serve queue batch cache memory fast slow small large "
         "red green blue one two three four five is are was were will can may run stop "
         "start send read write test good bad yes no what why how where who it this that").split()


def _corpus(seed: int, lines: int = 3000) -> list[str]:
    # Seeded generator over a fixed word list: the training text, hence the merges, are
    # reproducible. Capitals, numbers and glued word pairs give BPE enough distinct
    # pieces to fill the whole vocabulary (plain words alone saturate near 500 tokens).
    rng = random.Random(seed)

    def word() -> str:
        kind = rng.random()
        if kind < 0.1:
            return str(rng.randint(0, 9999))
        if kind < 0.35:
            return rng.choice(WORDS) + rng.choice(WORDS)
        return rng.choice(WORDS).capitalize() if kind < 0.45 else rng.choice(WORDS)

    return [" ".join(word() for _ in range(rng.randint(3, 16))) + rng.choice(".?!,")
            for _ in range(lines)]


def _train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte-level: any UTF-8 input round-trips, no unknown tokens.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    # Plain encode() prepends BOS like LLaMA tokenizers; the chat template adds it itself.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                 pad_token=PAD, additional_special_tokens=[IM_START, IM_END])
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _is_complete(out_dir: Path, seed: int) -> bool:
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (marker == {"seed": seed, "version": GENERATOR_VERSION}
            and all((out_dir / f).is_file() for f in FILES))


def make_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny model to out_dir (skipped if already there for this seed) and return it."""
    out_dir = Path(out_dir)
    if _is_complete(out_dir, seed):
        return out_dir
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).unlink(missing_ok=True)  # a crash below must not leave a "complete" dir
    tokenizer = _train_tokenizer(seed)
    assert len(tokenizer) == VOCAB_SIZE, len(tokenizer)  # model and tokenizer agree
    ids = {name: tokenizer.convert_tokens_to_ids(t) for name, t in
           (("bos", BOS), ("eos", EOS), ("pad", PAD), ("im_end", IM_END))}
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        # head_dim 32: vLLM's CPU attention only supports 32, 64, 80, 96, 112, 128, ...
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=2048, bos_token_id=ids["bos"], eos_token_id=ids["eos"],
        pad_token_id=ids["pad"], tie_word_embeddings=False, dtype="float32")
    torch.manual_seed(seed)  # CPU init under a fixed seed gives byte-identical weights
    model = LlamaForCausalLM(config).eval()
    # Chat replies end with <|im_end|>, so stop on it as well as on </s>.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=[ids["eos"], ids["im_end"]], pad_token_id=ids["pad"])
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / MARKER).write_text(json.dumps({"seed": seed, "version": GENERATOR_VERSION}) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_tiny_model(args.out_dir, args.seed)
    for path in sorted(out.iterdir()):
        print(f"{path.stat().st_size:>10}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
