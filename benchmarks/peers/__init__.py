"""The commands that run one job through each tool measured by benchmarks/throughput.py.

Each tool function gets the job and its work folder and returns (argv, cwd) or raises Unavailable
with the reason (the peer's venv is missing, it refuses this machine). ftc's own entries compile a
spec with `ftc compile` and run the emitted train.py unchanged; the peers run in their own venvs
under PEER_VENVS, so nothing of theirs reaches ftc's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEER_VENVS = Path(os.environ.get("FTC_PEER_VENVS", "/work/peer-venvs"))
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # all-linear on Llama


class Unavailable(Exception):
    """The tool cannot run this job here; the message says why."""


@dataclass(frozen=True)
class Job:
    name: str
    data: Path  # ftc's form of the rows (completion columns sentence/yoda, or chat messages)
    messages: Path  # the same rows as chat `messages` (user/assistant)
    pairs: Path | None  # TRL's conversational prompt/completion form (completion jobs only)
    model: Path  # a safetensors folder every tool reads
    steps: int
    max_length: int
    ftc: dict[str, str] = field(default_factory=dict)  # [data] keys of ftc's spec beyond the job's
    device: str = "cpu"  # "cuda": the GPU section (bf16, no core pinning)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


def _venv(name: str, module: str) -> Path:
    python = PEER_VENVS / name / "bin" / "python"
    if not python.exists():
        raise Unavailable(f"no venv at {python.parent.parent} (install it: benchmarks/README.md)")
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    if probe.returncode:
        tail = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise Unavailable(f"`import {module}` fails in its venv: {tail[0][:300]}")
    return python


def ftc_spec(job: Job, work: Path, data_keys: dict[str, str], hardware: str = "") -> str:
    fmt = ('format = "completion"\n[data.columns]\nprompt = "sentence"\ncompletion = "yoda"\n'
           if job.pairs else 'format = "chat"\n')
    extra = "".join(f"{k} = {v}\n" for k, v in {**job.ftc, **data_keys}.items())
    return (f'name = "bench-{job.name}"\n[model]\nbase = "smollm2-135m-instruct"\n'
            f'[data]\nsource = {json.dumps(str(job.data))}\nvalidation = 0.0\nmax_length = {job.max_length}\n'
            f'{extra}{fmt}'
            '[method]\nkind = "lora"\nr = 8\nalpha = 16\ndropout = 0.05\ntarget_modules = "all-linear"\n'
            f'[train]\nmax_steps = {job.steps}\nlearning_rate = 2e-3\nbatch_size = 8\n'
            f'[hardware]\ndevice = "{job.device}"\n' + ("vram_gb = 16\n" if job.device == "cuda" else "")  # a cuda
            + f'{hardware}\n')  # spec states a budget; 16 GiB holds every micro-batch of this 135M job


def ftc(job: Job, work: Path, data_keys: dict[str, str] | None = None, hardware: str = "") -> tuple[list[str], Path]:
    """Compile the job's spec and run the emitted script (train.py RUN_DIR, as `ftc run` starts it)."""
    spec = work / "spec.toml"
    spec.write_text(ftc_spec(job, work, data_keys or {}, hardware))
    out = work / "compiled"
    ran = subprocess.run([sys.executable, "-m", "ftc.cli.main", "compile", str(spec), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    if ran.returncode:
        raise Unavailable(f"ftc compile failed: {(ran.stderr or ran.stdout)[-400:]}")
    return [sys.executable, str(out / "train.py"), str(work / "run")], work


def ftc_trl_head(job: Job, work: Path) -> tuple[list[str], Path]:
    """ftc's emitted script with TRL's fused loss head, as emitted before issue 19: the plan's
    kept-positions head (ftc.runtime.lmhead) is its one call, removed here."""
    argv, cwd = ftc(job, work)
    script, call = work / "compiled" / "train.py", "score_kept_positions(model)"
    text = script.read_text()
    if call not in text:
        raise Unavailable("the plan has no kept-positions loss head to remove (LM_HEAD is the trainer's)")
    script.write_text("".join(line for line in text.splitlines(keepends=True) if call not in line))
    return argv, cwd


def trl_script(job: Job, work: Path, *flags: str) -> tuple[list[str], Path]:
    """The hand-written SFTTrainer script, in ftc's venv (the same TRL, transformers and PEFT)."""
    data = job.pairs or job.messages
    return [sys.executable, str(HERE / "trl_sft.py"), str(job.model), str(data), str(work / "out"),
            "--steps", str(job.steps), "--max-length", str(job.max_length), "--device", job.device, *flags], work


def trl_cli(job: Job, work: Path) -> tuple[list[str], Path]:
    """`trl sft` from its own venv, the options its docs give for LoRA. TRL 1.16's CLI is the `trl` script
    (no `python -m trl.cli`), and it takes no data_files: the rows go alone into a folder it loads."""
    python = _venv("trl", "trl")
    data = work / "data"
    data.mkdir(exist_ok=True)
    shutil.copyfile(job.pairs or job.messages, data / "train.jsonl")
    return [str(python.parent / "trl"), "sft", "--model_name_or_path", str(job.model), "--dataset_name", str(data),
            "--output_dir", str(work / "out"), "--max_steps", str(job.steps), "--per_device_train_batch_size", "8",
            "--learning_rate", "2e-3", "--lr_scheduler_type", "cosine", "--warmup_steps", "0.05",
            "--max_length", str(job.max_length), "--use_peft", "--lora_r", "8", "--lora_alpha", "16",
            "--lora_dropout", "0.05", "--lora_target_modules", "all-linear",
            *(["--bf16", "true"] if job.cuda else ["--use_cpu", "--bf16", "false"]),
            "--save_strategy", "no", "--report_to", "none", "--logging_steps", "5", "--seed", "42",
            "--dtype", "bfloat16" if job.cuda else "float32"], work


def unsloth(job: Job, work: Path) -> tuple[list[str], Path]:
    python = _venv("unsloth", "unsloth")
    data = job.pairs or job.messages
    return [str(python), str(HERE / "unsloth_sft.py"), str(job.model), str(data), str(work / "out"),
            "--steps", str(job.steps), "--max-length", str(job.max_length)], work


def llamafactory(job: Job, work: Path) -> tuple[list[str], Path]:
    """`llamafactory-cli train config.yaml`: LoRA SFT on the messages (sharegpt/openai form)."""
    python = _venv("llamafactory", "llamafactory")
    (work / "data").mkdir(exist_ok=True)
    (work / "data" / "dataset_info.json").write_text(json.dumps({"bench": {
        "file_name": str(job.messages), "formatting": "sharegpt", "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"}}}))
    config = {"model_name_or_path": str(job.model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
              "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_target": "all", "dataset": "bench",
              "dataset_dir": str(work / "data"), "template": "default", "cutoff_len": job.max_length,
              "output_dir": str(work / "out"), "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
              "learning_rate": 2e-3, "max_steps": job.steps, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05,
              "logging_steps": 5, "save_strategy": "no", "report_to": "none", "bf16": job.cuda, "seed": 42,
              "use_cpu": not job.cuda, "overwrite_output_dir": True, "preprocessing_num_workers": 1,
              "dataloader_num_workers": 0}
    # a .yaml name: LLaMA-Factory 0.9.5 reads a .json config with json.load(Path) and fails; JSON is YAML
    (work / "config.yaml").write_text(json.dumps(config, indent=1))
    return [str(python.parent / "llamafactory-cli"), "train", str(work / "config.yaml")], work


def axolotl(job: Job, work: Path) -> tuple[list[str], Path]:
    """`axolotl train config.yml`: LoRA on the messages with the model's chat template, answers trained."""
    python = _venv("axolotl", "axolotl")
    config = {"base_model": str(job.model), "datasets": [{"path": str(job.messages), "ds_type": "json",
                                                          "type": "chat_template", "field_messages": "messages",
                                                          "roles_to_train": ["assistant"]}],
              "chat_template": "tokenizer_default", "adapter": "lora", "lora_r": 8, "lora_alpha": 16,
              "lora_dropout": 0.05, "lora_target_linear": True, "sequence_len": job.max_length,
              "micro_batch_size": 8, "gradient_accumulation_steps": 1, "max_steps": job.steps,
              "learning_rate": 2e-3, "lr_scheduler": "cosine", "warmup_ratio": 0.05, "optimizer": "adamw_torch",
              "output_dir": str(work / "out"), "val_set_size": 0, "save_strategy": "no", "logging_steps": 5,
              "bf16": job.cuda, "fp16": False, "tf32": False, "seed": 42, "sample_packing": False,
              "dataset_prepared_path": str(work / "prepared"),
              # axolotl 0.19 turns its Triton LoRA kernels on for LoRA by itself; they need CUDA
              **({} if job.cuda else {f"lora_{part}_kernel": False for part in ("mlp", "qkv", "o", "embedding")})}
    (work / "config.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return [str(python), "-m", "axolotl.cli.train", str(work / "config.yml")], work


TOOLS = {
    "ftc": lambda job, work: ftc(job, work),  # the planner's choices
    "ftc-padded": lambda job, work: ftc(job, work, {"padding_free": "false"}),  # the unoptimised path
    "ftc-packed": lambda job, work: ftc(job, work, {"packing": "true"}),
    "ftc-fp32": lambda job, work: ftc(job, work, {}, 'precision = "fp32"'),  # the plan on a CPU without native bf16
    "ftc-trl-head": ftc_trl_head,  # TRL's fused loss head instead of the planned kept-positions one
    # the GPU section's kernel choices (compiler/plan/kernels.py), each pinned against the planner's pick:
    "ftc-sdpa": lambda job, work: ftc(job, work, {}, 'attention = "sdpa"'),
    "ftc-flash": lambda job, work: ftc(job, work, {}, 'attention = "flash_attention_2"'),  # needs flash-attn
    "ftc-liger": lambda job, work: ftc(job, work, {}, "liger = true"),  # needs liger-kernel
    "ftc-no-liger": lambda job, work: ftc(job, work, {}, "liger = false"),
    "trl": lambda job, work: trl_script(job, work),
    "trl-padding-free": lambda job, work: trl_script(job, work, "--padding-free"),
    "trl-cli": trl_cli,
    "unsloth": unsloth,
    "llamafactory": llamafactory,
    "axolotl": axolotl,
}
