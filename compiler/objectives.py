"""Checks of `[train] objective` against the data format, the method and the run: each pair TRL's preference
trainers cannot train is a located spec error saying why."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler.spec import Spec

TRAINERS = {"dpo": "DPOTrainer", "orpo": "ORPOTrainer", "kto": "KTOTrainer", "simpo": "CPOTrainer"}


def objective_findings(spec: Spec) -> Iterator[tuple[str, str]]:
    """(key, message) for each objective the rest of the spec cannot train."""
    t, d, m = spec.train, spec.data, spec.method
    if t.objective == "sft":
        if d.format == "preference":
            yield "data.format", ("preference data trains a preference objective, but train.objective is sft; set "
                                  "train.objective = \"dpo\" (or orpo, kto, simpo), or use a format with one answer")
        return
    if d.format != "preference":
        yield "train.objective", (f"{t.objective} learns from preferred and rejected answers, but data.format is "
                                  f"{d.format!r}; set data.format = \"preference\" with prompt/chosen/rejected columns "
                                  "(kto: prompt/completion/label), or train.objective = \"sft\"")
    if m.trainer == "hf":  # virtual-token methods: TRL builds attention masks without the virtual tokens
        yield "method.kind", (f"{m.kind} adds virtual tokens that TRL's {TRAINERS[t.objective]} leaves out of the "
                              "attention mask it builds (the same failure as SFTTrainer with prefix tuning), so it "
                              "cannot train; use lora (or dora, rslora, qlora, ia3, full) for a preference objective")
    if t.reference == "copy" and m.peft:
        yield "train.reference", (f"{m.kind} trains adapters, so its reference is the adapter as training starts, "
                                  "frozen (TRL copies it as adapter \"ref\"), without a second copy of the base; "
                                  "remove reference (auto) or set reference = \"precomputed\"")
    if d.packing or d.padding_free:
        key = "data.packing" if d.packing else "data.padding_free"
        yield key, (f"TRL's {TRAINERS[t.objective]} pads each chosen/rejected pair itself and packs nothing; "
                    f"remove {key.split('.')[1]}")
    if spec.eval.metrics or spec.eval.compare:
        yield ("eval.metrics" if spec.eval.metrics else "eval.compare",
               "preference runs measure held-out preference accuracy (chosen more likely than rejected) before and "
               "after training on their own; the generation metrics are for sft; remove [eval] compare/metrics")
    if spec.hardware.world > 1:
        yield ("hardware.devices" if spec.hardware.devices > 1 else "hardware.nodes",
               f"{t.objective} runs in one process for now: ftc's preference data stage is not yet shared between "
               "processes (each would write RUN_DIR/data); set devices = 1 and nodes = 1")
    if spec.train.early_stopping_patience is not None:
        yield "train.early_stopping_patience", ("stops on the validation loss of sft; a preference objective's "
                                                "eval loss is another quantity; remove early_stopping_patience")
