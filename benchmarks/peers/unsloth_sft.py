"""The job through Unsloth (its FastLanguageModel + TRL's SFTTrainer), as its notebooks write it.

python unsloth_sft.py MODEL DATA.jsonl OUT_DIR --steps 40 --max-length 96
"""

import argparse

from unsloth import FastLanguageModel  # noqa: I001 - Unsloth must be imported before transformers/TRL

from datasets import load_dataset
from trl import SFTConfig, SFTTrainer

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--max-length", type=int, default=96)
cli = parser.parse_args()

model, tokenizer = FastLanguageModel.from_pretrained(cli.model, max_seq_length=cli.max_length, dtype=None,
                                                     load_in_4bit=False)
model = FastLanguageModel.get_peft_model(
    model, r=8, lora_alpha=16, lora_dropout=0.05, use_gradient_checkpointing=False, random_state=42,
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
args = SFTConfig(
    output_dir=cli.out, max_steps=cli.steps, per_device_train_batch_size=8, learning_rate=2e-3,
    lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=5, save_strategy="no", report_to="none",
    seed=42, max_length=cli.max_length, disable_tqdm=True)
data = load_dataset("json", data_files=cli.data, split="train")
SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer).train()
