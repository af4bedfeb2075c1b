"""Fine-tuning methods: one module per family, each method a pydantic model whose `kind` literal is the
spec's `method.kind`, implementing base.MethodBase's protocol. `METHODS` is the one registry; adding a
method means adding a class, one entry in `_ALL` and its template.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from ftc.compiler.methods.adapter import Ia3, LlamaAdapter
from ftc.compiler.methods.base import KeyConflict, MethodBase, MethodPlan
from ftc.compiler.methods.full import Freeze, Full, LinearProbe
from ftc.compiler.methods.lora import Dora, Lora, Lora8, LoraPlus, Pissa, QLora, RsLora
from ftc.compiler.methods.prompt import Prefix, Prompt, PTuning

_ALL = (Full, Freeze, LinearProbe, Lora, QLora, Lora8, Dora, RsLora, Pissa, LoraPlus, Prefix, PTuning, Prompt,
        Ia3, LlamaAdapter)

Method = Annotated[Union[_ALL], Field(discriminator="kind")]  # type: ignore[valid-type]

METHODS: dict[str, type[MethodBase]] = {}
for _cls in _ALL:
    _kind = _cls.model_fields["kind"].default
    if _kind in METHODS:
        raise RuntimeError(f"method kind {_kind!r} registered twice")
    METHODS[_kind] = _cls

__all__ = ["METHODS", "KeyConflict", "Method", "MethodBase", "MethodPlan"]
