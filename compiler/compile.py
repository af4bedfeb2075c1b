"""`compile_spec`: the whole pipeline, load -> check -> plan -> emit, as one call.

The CLI, the runtime and the tests all go through it. Only `write` touches the disk.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ftc.compiler.checks import Facts, run_checks
from ftc.compiler.emit import Emitted, emit
from ftc.compiler.load import SpecSource, load_spec
from ftc.compiler.lrauto import RangeTest, measured_plan
from ftc.compiler.overrides import Override, with_provenance
from ftc.compiler.plan import Plan, build_plan
from ftc.core.errors import BudgetError
from ftc.core.paths import check_output_dir

try:
    VERSION = version("ftc")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    VERSION = "0+unknown"


@dataclass(frozen=True)
class CompileResult:
    """A compiled spec: what was read, decided and rendered, and where it belongs."""

    source: SpecSource
    facts: Facts
    plan: Plan
    emitted: Emitted
    out_dir: Path

    def stale_files(self) -> list[str]:
        """Files of out_dir that are missing or differ from this compile."""
        return [name for name, text in self.emitted.files.items()
                if not (self.out_dir / name).exists() or (self.out_dir / name).read_text(encoding="utf-8") != text]

    def write(self) -> list[str]:
        """Write the files that changed (atomically); returns their names."""
        check_output_dir(self.out_dir, "output folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        changed = self.stale_files()
        for name in changed:
            fd, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{name}.")
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(self.emitted.files[name])
            os.replace(tmp, self.out_dir / name)
        return changed


def compile_spec(path: str | Path, out_dir: str | Path | None = None,
                 overrides: tuple[Override, ...] = (), range_test: RangeTest | None = None) -> CompileResult:
    """Compile a spec file, with `--set` overrides over it; raises SpecError (all problems at once) for a bad spec.
    `range_test` runs the learning-rate range test of `learning_rate = "auto"` when its curve is not cached
    (ftc.cli.lrfind.run_range_test; without it such a spec compiles only from the cache)."""
    if out_dir is not None:  # refused before the work, not when writing
        check_output_dir(out_dir, "--out")
    source = load_spec(path, overrides)
    facts = run_checks(source)
    try:
        plan = build_plan(source.spec, facts, source.name)
        if source.spec.train.learning_rate == "auto":
            plan = measured_plan(source, facts, plan, overrides, range_test, build_plan)
    except BudgetError as exc:
        if not exc.key:
            raise
        file, line = source.where(exc.key)  # the key whose budget is exceeded, where the spec sets it
        where = f"{file}:{line}" if line else file
        raise BudgetError(f"{where}: {exc.key}: {exc}", exc.key) from None
    plan = with_provenance(plan, overrides)
    assert facts.model is not None
    emitted = emit(plan, spec_path=source.display, spec_text=source.text, version=VERSION, origin=facts.model.origin,
                   flags=tuple(o.flag for o in overrides))
    out = Path(out_dir) if out_dir is not None else Path("compiled") / source.name  # not build/: setuptools' link tree
    return CompileResult(source, facts, plan, emitted, out)
