"""The job as a user would write it with TRL's SFTTrainer by hand (benchmarks/throughput.py runs it).

python trl_sft.py MODEL DATA.jsonl OUT_DIR --steps 40 --max-length 96 [--packing | --padding-free]
DATA rows are TRL's conversational prompt/completion pairs (answer-only loss by default) or
`messages` conversations.
"""

import argparse

from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--max-length", type=int, default=96)
parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
parser.add_argument("--packing", action="store_true")
parser.add_argument("--padding-free", action="store_true")
cli = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(cli.model)
cuda = cli.device == "cuda"
model = AutoModelForCausalLM.from_pretrained(cli.model, dtype="bfloat16" if cuda else "float32")
args = SFTConfig(
    output_dir=cli.out, max_steps=cli.steps, per_device_train_batch_size=8, learning_rate=2e-3,
    lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=5, save_strategy="no", report_to="none",
    use_cpu=not cuda, bf16=cuda, seed=42, packing=cli.packing, padding_free=cli.padding_free,
    max_length=None if cli.padding_free else cli.max_length, disable_tqdm=True)
lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
data = load_dataset("json", data_files=cli.data, split="train")
trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
trainer.train()
