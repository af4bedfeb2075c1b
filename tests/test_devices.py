"""Several devices at compile time: the spec keys, the per-device estimate of each strategy, the planner's
choice, the compatibility checks and the launch files (parsed by accelerate's and DeepSpeed's own classes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import REPO

from ftc.compiler.compile import compile_spec
from ftc.compiler.estimate import RunShape, dims, estimate_memory
from ftc.compiler.estimate_shard import ZERO_OPTIMIZER_BYTES, Parallel
from ftc.compiler.catalog import find_model
from ftc.core.errors import BudgetError, SpecError

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def _spec(tmp_path: Path, hardware: str, method: str = 'kind = "lora"', *, base: str = LLAMA_8B,
          extra: str = "", batch: int = 16) -> Path:
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n"
                                              for i in range(40)), encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(f'[model]\nbase = "{base}"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nmax_length = 512\n'
                    f"[method]\n{method}\n[train]\nbatch_size = {batch}\n{extra}[hardware]\n{hardware}\n",
                    encoding="utf-8")
    return path


def _problems(path: Path) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    return {p.key: p.message for p in info.value.problems}


def test_gpus_is_refused_with_the_new_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    problems = _problems(_spec(tmp_path, 'gpu = "A100 80GB"\ngpus = 4'))
    assert "devices = 4" in problems["hardware"] and "gpus" in problems["hardware"]


def test_70b_on_8_a100_plans_sharding_with_a_per_device_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = compile_spec("specs/llama3/70b_lora_8xa100.toml")
    plan = result.plan
    assert plan["strategy"] in ("fsdp", "zero3") and plan["devices"] == 8
    assert plan["micro_batch_size"] * plan["grad_accum"] * 8 == plan["batch_size"]
    md = result.emitted.files["plan.md"]
    assert "## Estimated peak memory per device, by strategy" in md and "| DDP over 8 devices |" in md
    ddp = dict(plan.by_strategy)["DDP over 8 devices"]
    assert ddp.total > plan.budget_bytes  # a whole 70B copy per device does not fit: why DDP was not chosen
    assert "torchrun --standalone --nproc_per_node 8 train.py" in md
    assert {"accelerate.yaml", "launch.sh"} <= set(result.emitted.files)


def test_70b_on_2_nodes_offloads_and_emits_node_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = compile_spec("specs/llama3/70b_full_zero3_offload_2x4xa100.toml")
    plan, files = result.plan, result.emitted.files
    assert (plan["strategy"], plan["offload"], plan["nodes"]) == ("zero3", "optimizer", 2)
    assert plan.memory is not None and plan.memory.host > 0 and plan.memory.optimizer == 0
    assert {"ds_config.json", "launch_node0.sh", "launch_node1.sh", "sbatch.sh"} <= set(files)
    assert "--node_rank 1" in files["launch_node1.sh"] and "#SBATCH --nodes=2" in files["sbatch.sh"]
    assert any("host RAM" in r for r in plan.reasons)
    assert compile_spec("specs/llama3/70b_full_zero3_offload_2x4xa100.toml").emitted.files == files  # deterministic


def test_accelerate_config_parses_with_accelerates_own_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    monkeypatch.chdir(REPO)
    for spec, kind in (("specs/llama3/70b_lora_8xa100.toml", "FSDP"),):
        path = tmp_path / "accelerate.yaml"
        path.write_text(compile_spec(spec).emitted.files["accelerate.yaml"], encoding="utf-8")
        config = ClusterConfig.from_yaml_file(str(path))
        assert config.distributed_type.value == kind and config.num_processes == 8
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"


def test_deepspeed_json_is_accepted_by_the_trainer_and_deepspeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    monkeypatch.chdir(REPO)
    plan = compile_spec("specs/llama3/70b_full_zero3_offload_2x4xa100.toml").plan
    path = tmp_path / "ds_config.json"
    path.write_text(compile_spec("specs/llama3/70b_full_zero3_offload_2x4xa100.toml").emitted.files["ds_config.json"])
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=plan["micro_batch_size"],
                             gradient_accumulation_steps=plan["grad_accum"], bf16=True, use_cpu=True, report_to="none")
    hf = HfTrainerDeepSpeedConfig(str(path))
    hf.trainer_config_process(args)  # a value that differs from the Trainer's raises here

    class Model:
        class config:  # noqa: N801 - the attribute the Trainer reads
            hidden_size, hidden_sizes = 8192, None

    hf.trainer_config_finalize(args, Model(), 100)
    ds = DeepSpeedConfig(hf.config)
    assert ds.zero_optimization_stage == 3 and ds.zero_config.offload_optimizer.device == "cpu"
    assert ds.train_micro_batch_size_per_gpu == plan["micro_batch_size"]


def _shape(parallel: Parallel) -> RunShape:
    from ftc.compiler.methods.full import Full

    config = find_model(LLAMA_8B)
    assert config is not None
    config = {**config, "torch_dtype": "bfloat16"}  # as its config.json says
    return RunShape(config=config, method=Full().resolve(config), micro_batch=1, seq_len=512,
                    gradient_checkpointing=True, dtype="bfloat16", device="cuda", optimizer="adamw_torch_fused",
                    parallel=parallel)


def test_estimate_shards_states_as_each_strategy_does() -> None:
    params = _shape(Parallel()).method.trainable_parameters(dims(_shape(Parallel()).config))
    single, ddp = estimate_memory(_shape(Parallel())), estimate_memory(_shape(Parallel("ddp", 8)))
    assert ddp.trainable == single.trainable and ddp.buffers == single.trainable  # DDP buckets: a gradient copy
    zero2, zero3 = estimate_memory(_shape(Parallel("zero2", 8))), estimate_memory(_shape(Parallel("zero3", 8)))
    assert zero2.trainable == 2 * params  # 16-bit weights whole on every device (ZeRO paper: 2 + (2 + K)/N)
    assert zero3.trainable == 2 * params // 8  # and sharded under ZeRO-3
    offload = estimate_memory(_shape(Parallel("zero3", 8, "optimizer")))
    assert offload.optimizer == 0 and offload.host >= params * (ZERO_OPTIMIZER_BYTES + 4) // 8
    assert offload.total < zero3.total
    fsdp = estimate_memory(_shape(Parallel("fsdp", 8)))
    assert fsdp.trainable == 4 * params // 8  # accelerate upcasts trained bf16 weights to fp32 under FSDP2
    assert fsdp.buffers > 0 and fsdp.total < ddp.total


def test_nothing_fits_says_how_many_devices_would(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, 'gpu = "RTX 4090"\ndevices = 2', 'kind = "full"', base="meta-llama/Llama-3.1-70B-Instruct")
    with pytest.raises(BudgetError) as info:
        compile_spec(path)
    message = str(info.value)
    assert message.startswith("the run does not fit with ZeRO-3 over 2 devices") and "per device" in message
    needed = int(message.split(" devices (")[0].rsplit(" ", 1)[1])  # "or N devices (N/2 nodes of 2) with ..."
    assert needed > 2 and needed % 2 == 0 and f"batch_size a multiple of {needed}" in message
    assert 'strategy = "zero3", offload = "all"' in message  # weights in host RAM: fits the 2 devices


@pytest.mark.parametrize(("hardware", "method", "key", "words"), [
    ('devices = 2\nstrategy = "fsdp"', 'kind = "lora8"', "hardware.strategy", "accelerate#1415"),
    ('devices = 2\nstrategy = "zero3"', 'kind = "prompt"', "hardware.strategy", "peft#1633"),
    ('devices = 2\nstrategy = "fsdp"', 'kind = "llama_adapter"\nlayers = 2', "hardware.strategy", "llama-cookbook#359"),
    ('devices = 2\nstrategy = "fsdp"', 'kind = "loraplus"', "hardware.strategy", "Passing `optimizers`"),
    ('devices = 2\nstrategy = "fsdp"\noffload = "optimizer"', 'kind = "lora"', "hardware.offload", "CPUOffloadPolicy"),
    ('strategy = "ddp"', 'kind = "lora"', "hardware.strategy", "several devices"),
    ('devices = 3', 'kind = "lora"', "train.batch_size", "multiple of 3"),
    ('device = "cpu"\ndevices = 2\nstrategy = "fsdp"', 'kind = "lora"', "hardware.strategy", "never MULTI_CPU"),
])
def test_compatibility_matrix_refuses_with_a_located_reason(hardware: str, method: str, key: str, words: str,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        compile_spec(_spec(tmp_path, f'gpu = "A100 80GB"\n{hardware}', method))
    found = {p.key: p for p in info.value.problems}
    assert key in found and words in found[key].message and found[key].line is not None


def test_qlora_under_fsdp_stores_4bit_weights_in_the_compute_dtype(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = compile_spec(_spec(tmp_path, 'gpu = "A100 80GB"\ndevices = 4\nstrategy = "fsdp"', 'kind = "qlora"'))
    script = result.emitted.files["train.py"]
    assert result.plan["quant_storage"] == "bfloat16" and "accelerate#3983" in result.plan.settings["quant_storage"].why
    assert "bnb_4bit_quant_storage=getattr(torch, QUANT_STORAGE)" in script
    assert "device_map=" not in script  # sharding places the weights
    assert "activation_checkpointing=False" in script and '"activation_checkpointing": GRADIENT_CHECKPOINTING' in script
    compile(script, "train.py", "exec")


def test_one_device_plans_and_emits_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = compile_spec(_spec(tmp_path, 'gpu = "A100 80GB"'))
    assert result.plan["strategy"] == "single" and set(result.emitted.files) == {"train.py", "plan.json", "plan.md"}
    assert "STRATEGY" not in result.emitted.files["train.py"] and "ranks" not in result.emitted.files["train.py"]


def test_run_launches_torchrun_and_checks_node_options(tmp_path: Path) -> None:
    from ftc.cli.launch import Node, check_node, script_argv
    from ftc.core.errors import RunError

    one = {"strategy": "single", "devices": 1, "nodes": 1}
    assert script_argv(tmp_path, one, Node())[1:] == [str(tmp_path / "train.py"), str(tmp_path)]
    two = {"strategy": "ddp", "devices": 2, "nodes": 2}
    argv = script_argv(tmp_path, two, Node(1, "10.0.0.1:29501"))
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    assert argv[3:-2] == ["--nnodes", "2", "--nproc_per_node", "2", "--node_rank", "1", "--master_addr", "10.0.0.1",
                          "--master_port", "29501"]
    with pytest.raises(RunError, match="--node-rank K --master HOST:PORT"):
        check_node(two, Node())
    with pytest.raises(RunError, match="use 0 to 1"):
        check_node(two, Node(2, "h:1"))
    with pytest.raises(RunError, match="nodes = 1"):
        check_node(one, Node(0, "h:1"))


def test_resume_on_another_world_size_where_the_checkpoint_allows() -> None:
    from ftc.cli.launch import world_change

    ddp2 = {"strategy": "ddp", "devices": 2, "nodes": 1}
    assert world_change(ddp2, {"strategy": "single", "devices": 1, "nodes": 1}) == []  # DDP: whole states
    assert world_change({"strategy": "fsdp", "devices": 4, "nodes": 1}, {"strategy": "fsdp", "devices": 2}) == []
    zero = {"strategy": "zero3", "devices": 4, "nodes": 1, "offload": "none"}
    assert world_change(zero, {**zero, "offload": "optimizer"}) == []
    problem = world_change(zero, {**zero, "devices": 2})
    assert problem and "ds_to_universal" in problem[0] and "load_universal" in problem[0]
    assert world_change(ddp2, {"strategy": "fsdp", "devices": 2})  # another layout of the states


def test_ddp_puts_a_quantized_base_on_each_process_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = compile_spec(_spec(tmp_path, 'gpu = "A100 80GB"\ndevices = 2', 'kind = "qlora"'))
    script = result.emitted.files["train.py"]
    assert result.plan["strategy"] == "ddp" and "import os\n" in script
    assert 'device_map={"": int(os.environ.get("LOCAL_RANK", 0))}' in script and "QUANT_STORAGE" not in script
    compile(script, "train.py", "exec")


def test_zero3_builds_the_training_arguments_before_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers runs from_pretrained inside deepspeed.zero.Init only while a ZeRO-3 HfDeepSpeedConfig is alive
    (is_deepspeed_zero3_enabled): TrainingArguments(deepspeed=...) must come first; on CPU DeepSpeed's own comm
    too (TrainingArguments starts only torch.distributed there). Other strategies keep the usual order."""
    monkeypatch.chdir(tmp_path)
    for hardware, init in (('device = "cpu"\ndevices = 2\nstrategy = "zero3"', True),
                           ('gpu = "A100 80GB"\ndevices = 2\nstrategy = "zero3"', False)):
        script = compile_spec(_spec(tmp_path, hardware)).emitted.files["train.py"]
        assert script.index("deepspeed=str(") < script.index("ForCausalLM.from_pretrained(") < script.index("Trainer(")
        assert ('deepspeed.init_distributed(dist_backend="gloo")' in script) is init
        assert ("import deepspeed\n" in script) is init
        compile(script, "train.py", "exec")
    zero2 = _spec(tmp_path, 'gpu = "A100 80GB"\ndevices = 2\nstrategy = "zero2"')
    script = compile_spec(zero2).emitted.files["train.py"]
    assert script.index("ForCausalLM.from_pretrained(") < script.index("deepspeed=str(")


def test_host_ram_while_loading_is_estimated_per_strategy() -> None:
    """The checkpoint (bf16 as saved) is memory-mapped; weights in its dtype are views of it, converted ones
    private copies in every process; under ZeRO-3's zero.Init rank 0 alone reads it, and each process holds
    only its partition, on the device (on the host with weight offload)."""
    from dataclasses import replace

    def load(parallel: Parallel, dtype: str = "bfloat16"):  # type: ignore[no-untyped-def]
        return estimate_memory(replace(_shape(parallel), dtype=dtype)).loading

    ddp, fp16 = load(Parallel("ddp", 8)), load(Parallel("ddp", 8), "float16")  # the catalog: saved bf16
    assert ddp.checkpoint > 14 * 2**30 and ddp.each == 0 and ddp.node(8) == ddp.node(8, first=False) == ddp.checkpoint
    assert fp16.each == fp16.checkpoint and fp16.node(8) == 9 * fp16.checkpoint  # a converted copy per process
    zero3 = load(Parallel("zero3", 8), "float16")
    assert zero3.each == 0 and zero3.node(8) == zero3.checkpoint and zero3.node(8, first=False) == 0
    offload = load(Parallel("zero3", 8, "all"))
    assert offload.each == pytest.approx(offload.checkpoint / 8, rel=0.01)  # weight offload: partitions on the host
    assert offload.node(8) == offload.checkpoint + 8 * offload.each


def test_cpu_ram_gb_moves_the_planner_to_zero3_or_refuses_with_what_fits(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """8 processes each converting Llama-8B (saved bf16) to fp16 hold 8 whole copies (+ the mapped file) and do not
    fit a 64 GiB node; zero.Init does (rank 0 reads the checkpoint, partitions go to the GPUs), so "auto" plans
    ZeRO-3. An explicit ZeRO-2 is refused at hardware.cpu_ram_gb's line, naming what would fit."""
    from helpers import build_tiny_model

    monkeypatch.chdir(tmp_path)
    model = build_tiny_model(tmp_path / "llama-8b-config")  # its tokenizer; the config is Llama-3.1-8B's, saved bf16
    config = {**(find_model(LLAMA_8B) or {}), "torch_dtype": "bfloat16"}
    (model / "config.json").write_text(json.dumps(config))
    hardware = 'gpu = "A100 80GB"\nprecision = "fp16"\ndevices = 8\ncpu_ram_gb = 64'
    base = str(model)
    result = compile_spec(_spec(tmp_path, hardware, base=base))
    assert result.plan["strategy"] == "zero3"
    assert any(r.startswith("host RAM while loading: zero.Init") for r in result.plan.reasons)
    assert compile_spec(_spec(tmp_path, hardware.replace("= 64", "= 256"), base=base)).plan["strategy"] == "ddp"
    with pytest.raises(BudgetError) as info:
        compile_spec(_spec(tmp_path, hardware + '\nstrategy = "zero2"', base=base))
    message = str(info.value)
    assert message.startswith("s.toml:15: hardware.cpu_ram_gb: 64 GiB per node") and "ZeRO-2 over 8" in message
    assert 'what would fit: strategy = "zero3" (zero.Init' in message and "GiB (hardware.cpu_ram_gb)" in message


def test_offload_beyond_cpu_ram_gb_is_refused_with_more_nodes_or_no_offload(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, 'gpu = "A100 80GB"\ndevices = 8\nstrategy = "zero3"\noffload = "optimizer"\ncpu_ram_gb = 64',
                 'kind = "full"')
    with pytest.raises(BudgetError) as info:
        compile_spec(path)
    message = str(info.value)
    assert "hardware.cpu_ram_gb" in message and "while training:" in message and "offload keeps there" in message
    assert 'offload = "none"' in message and "nodes = " in message
