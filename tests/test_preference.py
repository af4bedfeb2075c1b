"""Preference objectives (train.objective = dpo | orpo | kto | simpo) on `format = "preference"` data: the stage
(mapping, drops), its tokens against TRL's own, the spec errors of impossible pairs, and (slow) each objective
training the tiny model into a result that plain PEFT / transformers reload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import data_settings, run_ftc, write_jsonl

from ftc.compiler import SpecError, compile_spec
from ftc.core.data.encode import DataError, ensure_chat_template
from ftc.core.data.preference import prepare_preference

WORDS = "red green blue yellow black white cat dog".split()
PAIRS = [{"prompt": f"pick {w}", "chosen": w.upper(), "rejected": w[::-1]} for w in WORDS]


def _settings(max_length: int = 64) -> object:
    columns = {f: f for f in ("prompt", "chosen", "rejected", "completion", "label", "system")}
    return data_settings("preference", max_length=max_length, columns=columns)


def _tokenizer(tiny_tokenizer):  # type: ignore[no-untyped-def]
    ensure_chat_template(tiny_tokenizer)
    return tiny_tokenizer


def test_stage_maps_text_and_chat_and_counts_drops(tiny_tokenizer) -> None:  # type: ignore[no-untyped-def]
    tok = _tokenizer(tiny_tokenizer)
    rows = [PAIRS[0],
            {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "pick cat"}],
             "chosen": {"role": "assistant", "content": "CAT"}, "rejected": [{"role": "assistant", "content": "tac"}]},
            {"prompt": "pick x", "chosen": "same", "rejected": "same"},
            PAIRS[0],
            {"prompt": "pick y", "chosen": "Y"}]
    data = prepare_preference(tok, _settings(), source="rows", kind=None, rows=rows)
    assert [p.row for p in data.train] == [1, 2]
    assert data.stats["dropped"] == {"malformed": 1, "empty": 0, "duplicate": 1, "same_answers": 1, "untrained": 0}
    chat = data.train[1]
    assert chat.messages[0] == {"role": "system", "content": "be brief"}
    assert chat.answers["chosen"].startswith("CAT") and chat.answers["chosen"].endswith(tok.eos_token)
    assert data.stats["splits"]["train"]["sequences"] == 4  # two per pair: the doubled sequences


def test_prompt_turns_are_read_as_conversations_are(tiny_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Prompt turns follow the SFT stage's one turn reader (core/data/mapping.chat_turn): ShareGPT keys, roles in
    any case, [data.roles]; a role nobody mapped is a located error naming it and its rows, as for SFT data."""
    tok = _tokenizer(tiny_tokenizer)
    rows = [{"prompt": [{"from": "Human", "value": "pick cat"}], "chosen": "CAT", "rejected": "tac"},
            {"prompt": [{"from": "narrator", "value": "pick dog"}], "chosen": "DOG", "rejected": "god"},
            {"prompt": [{"speaker": "user"}], "chosen": "A", "rejected": "B"}]
    with pytest.raises(DataError, match=r"roles that cannot be mapped.*'narrator' \(rows 2\).*\[data.roles\]"):
        prepare_preference(tok, _settings(), source="rows", kind=None, rows=rows)
    data = prepare_preference(tok, data_settings("preference", max_length=64, roles={"narrator": "user"},
                                                 columns={f: f for f in ("prompt", "chosen", "rejected")}),
                              source="rows", kind=None, rows=rows)
    assert [p.messages for p in data.train] == [[{"role": "user", "content": "pick cat"}],
                                                [{"role": "user", "content": "pick dog"}]]
    assert "prompt turn 1 has no role or content key" in data.dropped[0]["detail"]


def test_kto_rows_and_no_pairs_left(tiny_tokenizer) -> None:  # type: ignore[no-untyped-def]
    tok = _tokenizer(tiny_tokenizer)
    rows = [{"prompt": "pick red", "completion": "RED", "label": True},
            {"prompt": "pick red", "completion": "der", "label": "yes"}]
    data = prepare_preference(tok, _settings(), source="rows", kind=None, rows=rows)
    assert [(p.label, list(p.answers)) for p in data.train] == [(True, ["completion"])]
    assert data.dropped[0]["reason"] == "malformed" and "'yes', not true or false" in data.dropped[0]["detail"]
    with pytest.raises(DataError, match="no preference pair is left"):
        prepare_preference(tok, _settings(), source="rows", kind=None, rows=[{"prompt": "a", "chosen": "b",
                                                                            "rejected": "b"}])


@pytest.mark.parametrize("objective", ["dpo", "kto"])
def test_tokens_are_trl_own(objective: str, tiny_model: Path, tiny_tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What the stage shows as trained is what TRL's trainer trains: its tokenized rows and its collator's
    completion mask, token for token (truncation to max_length included)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    tok = _tokenizer(tiny_tokenizer)
    rows = PAIRS + [{"prompt": "pick " + "long " * 6, "chosen": "LONG " * 20, "rejected": "no"}]
    if objective == "kto":
        rows = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"} for r in rows
                for k in ("chosen", "rejected")]
    data = prepare_preference(tok, _settings(max_length=40), source="rows", kind=None, rows=rows)
    assert any(p.truncated for p in data.train)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, task_type="CAUSAL_LM"))
    config, trainer_class = (DPOConfig, DPOTrainer) if objective == "dpo" else (KTOConfig, KTOTrainer)
    args = config(output_dir=str(tmp_path / "out"), use_cpu=True, max_length=40, report_to="none",
                  per_device_train_batch_size=len(data.train))
    trainer = trainer_class(model=model, args=args, train_dataset=data.dataset("train"), processing_class=tok)
    answers = list(data.train[0].answers)
    for pair, row in zip(data.train, trainer.train_dataset, strict=True):
        assert row["prompt_ids"] == pair.tokens["prompt_ids"]
        for name in answers:  # TRL's rows are untruncated; its collator cuts them to max_length
            assert row[f"{name}_ids"][:40 - len(row["prompt_ids"])] == pair.tokens[f"{name}_ids"]
    batch = trainer.data_collator([dict(r) for r in trainer.train_dataset])
    trained = batch["completion_mask"].sum(dim=1).tolist()
    expected = [len(p.tokens[f"{a}_ids"]) for a in answers for p in data.train]
    assert trained == expected


BASE = ('name = "p"\n[model]\nbase = "tiny"\n[data]\nsource = "p.jsonl"\nformat = "{fmt}"\nvalidation = 0.25\n'
        'max_length = 32\n[method]\nkind = "{kind}"\n[train]\nobjective = "{objective}"\nmax_steps = 8\n'
        'batch_size = 4\nlearning_rate = {lr}\nlogging_steps = 2\nwarmup = 0\n{train}[hardware]\ndevice = "cpu"\n'
        '[eval]\nsteps = 4\n')


def _spec(tmp_path: Path, tiny_model: Path, *, fmt: str = "preference", kind: str = "lora", objective: str = "dpo",
          lr: float = 5e-2, train: str = "", rows: list[dict[str, object]] | None = None) -> Path:
    if not (tmp_path / "tiny").exists():
        shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "p.jsonl", rows or PAIRS * 2 + [{"prompt": f"q{i}", "chosen": "A", "rejected": "B"}
                                                           for i in range(8)])
    path = tmp_path / "p.toml"
    path.write_text(BASE.format(fmt=fmt, kind=kind, objective=objective, lr=lr, train=train))
    return path


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"fmt": "completion"}, "train.objective", "data.format = \"preference\""),
    ({"objective": "sft"}, "data.format", "train.objective = \"dpo\""),
    ({"kind": "prefix"}, "method.kind", "virtual tokens"),
    ({"train": 'reference = "copy"\n'}, "train.reference", "a second copy of the base"),
    ({"objective": "orpo", "train": 'reference = "precomputed"\n'}, "train.reference", "ignores it"),
    ({"objective": "sft", "fmt": "completion", "train": "beta = 0.2\n"}, "train.beta", "ignores it"),
    ({"train": "early_stopping_patience = 2\n"}, "train.early_stopping_patience", "preference"),
])
def test_impossible_pairs_are_located_errors(changes: dict[str, str], key: str, words: str, tiny_model: Path,
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [{"prompt": "p", "completion": "c"}] * 8 if changes.get("fmt") == "completion" else None
    with pytest.raises(SpecError) as info:
        compile_spec(_spec(tmp_path, tiny_model, rows=rows, **changes))  # type: ignore[arg-type]
    found = [str(p) for p in info.value.problems]
    assert any(key in p and words in p for p in found), found


def test_dropout_under_a_preference_objective_is_noted_as_not_applying(tiny_model: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _spec(tmp_path, tiny_model)
    path.write_text(path.read_text().replace('kind = "lora"\n', 'kind = "lora"\ndropout = 0.1\n'))
    notes = compile_spec(path).plan.notes
    assert any("method.dropout = 0.1 does not apply" in n for n in notes), notes


def _reload(run: Path, kind: str, base: Path):  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM

    if kind == "full":
        return AutoModelForCausalLM.from_pretrained(run / "final")
    from peft import PeftModel

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), run / "final")


def _train_and_reload(objective: str, kind: str, tiny_model: Path, tmp_path: Path, train: str = "") -> dict:  # type: ignore[type-arg]
    rows = None
    if objective == "kto":
        rows = [{"prompt": p["prompt"], "completion": p[k], "label": k == "chosen"} for p in PAIRS
                for k in ("chosen", "rejected")]
    _spec(tmp_path, tiny_model, objective=objective, kind=kind, lr=3e-3 if kind == "full" else 5e-2, train=train,
          rows=rows)
    done = run_ftc("run", "p.toml", "--run-dir", "runs/p", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "runs" / "p"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all("reward_margin" in e or objective == "kto" for e in steps)
    assert any("reward_chosen" in e for e in steps)  # KTO: only in steps whose batch has a desirable answer
    losses = [e["loss"] for e in steps]
    assert losses[-1] < losses[0], losses
    model = _reload(run, kind, tmp_path / "tiny")
    assert sum(p.numel() for p in model.parameters()) > 0
    return json.loads((run / "eval.json").read_text())


@pytest.mark.slow
def test_dpo_trains_and_reloads_with_peft(tiny_model: Path, tmp_path: Path) -> None:
    result = _train_and_reload("dpo", "lora", tiny_model, tmp_path)
    assert result["main"] == "preference_accuracy" and result["after"]["preference_accuracy"] is not None


CASES = [("orpo", "lora", ""), ("kto", "lora", ""), ("simpo", "lora", ""), ("dpo", "dora", ""), ("dpo", "full", ""),
         ("dpo", "full", 'reference = "precomputed"\n'), ("kto", "lora", 'reference = "precomputed"\n'),
         ("dpo", "lora", 'dpo_loss = "ipo"\n'), ("dpo", "ia3", ""), ("dpo", "loraplus", "")]


@pytest.mark.slow
@pytest.mark.parametrize(("objective", "kind", "train"), CASES,
                         ids=["-".join([o, k] + t.split('"')[1:2]) for o, k, t in CASES])
def test_each_objective_trains_and_reloads(objective: str, kind: str, train: str, tiny_model: Path,
                                           tmp_path: Path) -> None:
    _train_and_reload(objective, kind, tiny_model, tmp_path, train)


def test_trl_preference_configs_disable_dropout() -> None:
    """The estimate counts no dropout for a preference objective (compiler/estimate_preference.py) because TRL's
    preference trainers set every dropout to 0 by default; a TRL that stops doing so breaks that term."""
    import dataclasses

    from trl import DPOConfig, KTOConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig

    for config in (DPOConfig, KTOConfig, ORPOConfig, CPOConfig):
        assert {f.name: f.default for f in dataclasses.fields(config)}["disable_dropout"] is True, config


@pytest.mark.parametrize("objective", ["dpo", "kto", "sft"])
def test_lora_dropout_counts_only_for_sft(objective: str, tiny_model: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """method.dropout changes an SFT estimate, not a preference one (train.py leaves TRL's disable_dropout on)."""
    monkeypatch.chdir(tmp_path)
    fmt, rows = ("completion", [{"prompt": "p", "completion": "c"}] * 8) if objective == "sft" else ("preference", None)
    if objective == "kto":
        rows = [{"prompt": f"q{i}", "completion": w, "label": i % 2 == 0} for i, w in enumerate(WORDS * 2)]
    path = _spec(tmp_path, tiny_model, objective=objective, fmt=fmt, rows=rows)
    text = path.read_text()

    def memory(dropout: float) -> object:
        path.write_text(text.replace('kind = "lora"\n', f'kind = "lora"\ndropout = {dropout}\n'))
        result = compile_spec(path)
        assert "disable_dropout" not in result.emitted.files["train.py"]
        return result.plan.memory

    assert (memory(0.0) == memory(0.2)) is (objective != "sft")


def test_orpo_keeps_the_chosen_cross_entropy(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORPO's SFT term keeps one more log_softmax over the chosen rows than SimPO (cpo_alpha = 0)."""
    monkeypatch.chdir(tmp_path)
    orpo, simpo = (compile_spec(_spec(tmp_path, tiny_model, objective=o)).plan.memory for o in ("orpo", "simpo"))
    assert orpo is not None and simpo is not None
    assert orpo.activations == simpo.activations and orpo.logits > simpo.logits
