"""`ftc schema`: the spec's JSON Schema, the checked-in copy, and the example specs against it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from ftc.cli.main import main
from ftc.compiler.schema import SCHEMA_FILE, schema_text, spec_schema

REPO = Path(__file__).resolve().parent.parent
SPECS = sorted((REPO / "specs").rglob("*.toml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = spec_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_checked_in_schema_is_current() -> None:
    assert (REPO / SCHEMA_FILE).read_text(encoding="utf-8") == schema_text(), (
        f"{SCHEMA_FILE} is stale: run .venv/bin/ftc schema --out {SCHEMA_FILE}")


def test_every_key_has_a_description() -> None:
    schema = spec_schema()
    missing = [f"{name}.{key}" for name, definition in schema["definitions"].items()
               for key, prop in definition.get("properties", {}).items() if not prop.get("description")]
    assert not missing
    lora = schema["definitions"]["Lora"]["properties"]
    assert lora["r"]["default"] == 8 and "Rank" in lora["r"]["description"]
    assert schema["definitions"]["DataSpec"]["properties"]["columns"]["default"] == {}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_example_specs_validate_and_point_at_the_schema(path: Path, validator: jsonschema.Draft7Validator) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#:schema "), f"{path} has no #:schema directive on its first line"
    assert (path.parent / first.removeprefix("#:schema ").strip()).resolve() == (REPO / SCHEMA_FILE).resolve()
    errors = list(validator.iter_errors(tomllib.loads(path.read_text(encoding="utf-8"))))
    assert not errors, [e.message for e in errors]


def _demo() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "specs" / "demo.toml").read_text(encoding="utf-8"))


def test_misspelt_keys_are_rejected(validator: jsonschema.Draft7Validator) -> None:
    spec = _demo()
    spec["train"]["epoch"] = spec["train"].pop("epochs")
    errors = list(validator.iter_errors(spec))
    assert errors and "'epoch' was unexpected" in errors[0].message
    spec = _demo()
    spec["method"]["rank"] = 8  # inside the discriminated union: no method variant accepts it
    assert list(validator.iter_errors(spec))


def test_method_union_picks_by_kind(validator: jsonschema.Draft7Validator) -> None:
    for kind in ("lora", "qlora", "full", "prefix", "ia3"):
        spec = _demo()
        spec["method"] = {"kind": kind}
        assert not list(validator.iter_errors(spec)), kind
    spec = _demo()
    spec["method"] = {"kind": "lorra"}
    assert list(validator.iter_errors(spec))
    spec["method"] = {"r": 8}  # the kind is required, as pydantic's discriminator requires it
    assert list(validator.iter_errors(spec))


def test_bad_values_are_rejected(validator: jsonschema.Draft7Validator) -> None:
    spec = _demo()
    spec["method"]["r"] = 0
    spec["data"]["format"] = "chatml"
    assert len(list(validator.iter_errors(spec))) == 2


def test_schema_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "ftc spec"
    out = tmp_path / "s.json"
    assert main(["schema", "--out", str(out)]) == 0 and out.read_text() == schema_text()
    assert main(["schema", "--out", str(out)]) == 0  # its own file is replaced
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert main(["schema", "--out", str(other)]) == 1 and other.read_text() == "{}"
    assert main(["schema", "--out", str(other), "--force"]) == 0 and other.read_text() == schema_text()


def _taplo() -> str:
    import shutil
    import sys

    found = shutil.which("taplo", path=str(Path(sys.executable).parent))
    assert found, "taplo is in the dev extra: pip install -e '.[dev]'"
    return found


def test_taplo_reads_the_directive_and_validates(tmp_path: Path) -> None:
    """The editors' own engine (Taplo, behind Even Better TOML): every example spec passes through its
    #:schema directive, and a misspelt key fails."""
    import subprocess

    taplo = _taplo()
    done = subprocess.run([taplo, "lint", *map(str, SPECS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "bad.toml"
    text = (REPO / "specs" / "demo.toml").read_text().replace("epochs = 2", "epoch = 2")
    bad.write_text(text.replace("#:schema ../docs/ftc-spec.schema.json", f"#:schema {REPO / SCHEMA_FILE}"))
    done = subprocess.run([taplo, "lint", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "'epoch' was unexpected" in done.stdout + done.stderr
