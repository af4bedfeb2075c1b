"""Test helpers: a tiny random Llama-style model with a small BPE tokenizer, built by the tests.

The model has a real architecture (LlamaForCausalLM with GQA and SwiGLU) at a tiny size, so
every code path of the emitted scripts runs on a CPU in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog", "hello world", "answer question instruction input output",
    "system user assistant translate reverse upper lower", "one two three four five six seven eight nine ten",
    "red green blue yellow black white", "cat dog bird fish horse cow", "0123456789 ,.;:!?-'\"()[]{}<>/\\",
]


def build_tiny_model(directory: Path, *, chat_template: bool = True) -> Path:
    """Write a tiny LlamaForCausalLM and its tokenizer (byte-level BPE, ChatML) to `directory`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        bos_token=None, unk_token=None)
    if chat_template:
        tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(directory)

    import torch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.2,  # a frozen random head must be able to express an answer
                         tie_word_embeddings=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def write_jsonl(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_ftc(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `ftc` command line (a new process, as a user would)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "ftc.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def data_settings(format: str, max_length: int = 256, **fields: Any) -> Any:
    """DataSettings for the stage's own tests, every field explicit: the spec's defaults, except
    that nothing is held out (a test's few rows all train unless it asks for validation)."""
    from ftc.core.data.settings import DataSettings

    values: dict[str, Any] = {"columns": {}, "roles": {}, "template": None, "train_on": "answers", "validation": 0.0,
                              "seed": 42, "dedup": True, "near_dedup": None, "min_tokens": 0, "max_tokens": None,
                              "untrained": "error"}
    return DataSettings(format=format, max_length=max_length, **(values | fields))
