"""ftc's compiler: spec -> facts -> plan -> emitted files. Pure: never imports torch."""

from ftc.compiler.compile import CompileResult, compile_spec
from ftc.core.errors import FtcError, SpecError
from ftc.compiler.load import load_spec

__all__ = ["CompileResult", "FtcError", "SpecError", "compile_spec", "load_spec"]
