"""Fine-tuning methods: one module per family, each a config model with a fixed shape.

A method module defines a pydantic model whose `kind` literal is the spec's `method.kind`, and
names the template (`templates/methods/<template>.py.j2`) that emits its code. `METHODS` is the
one registry; adding a method means adding a module and one line here.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from ftc.compiler.methods.full import Full
from ftc.compiler.methods.lora import Lora, Lora8, QLora

Method = Annotated[Union[Full, Lora, QLora, Lora8], Field(discriminator="kind")]

METHODS: dict[str, type[Full | Lora | QLora | Lora8]] = {}
for _cls in (Full, Lora, QLora, Lora8):
    _kind = _cls.model_fields["kind"].default
    if _kind in METHODS:
        raise RuntimeError(f"method kind {_kind!r} registered twice")
    METHODS[_kind] = _cls

__all__ = ["METHODS", "Full", "Lora", "Lora8", "Method", "QLora"]
