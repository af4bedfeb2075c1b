"""Jinja templates that come from input, rendered in a sandbox with bounds on work and output.

A model's chat template and the spec's `data.template` are code written by someone else. jinja2's
ImmutableSandboxedEnvironment keeps them from reaching Python (no attributes of internals, no
mutation, `range` capped at 100,000 items) but not from looping forever: two nested
`range(100000)` loops are 10^10 steps, and `'x' * 10**10` asks for 10 GB. Every render here is
bounded instead (each bound per render, i.e. per example rendering):

  MAX_LOOP_STEPS   loop iterations, all loops of the render together (ticked per iteration)
  MAX_OUTPUT       characters of output, and of any one value built by `*`, `+`, `~` or a filter
  MAX_SECONDS      wall-clock time (checked at every loop step, output chunk, operator and filter)

Past a bound the render stops with `TemplateLimit`, whose message names the bound; callers report
it located (the row for data.template, the model for a chat template). jinja2 is imported only
when a template is first rendered: what train.py imports stays free of it.

At run time train.py renders the chat template through transformers' own sandbox, which has no
such bounds: `ftc compile` renders the same template here on the data's first rows
(compiler/tokens.py), so a template that runs away is refused before a run starts, and the run's
data stage encodes each example under `deadline` (MAX_SECONDS of wall-clock time for the example's
renders, by a timer signal in the main thread), so one that runs away on a later row stops with
that row named.
`data.template` is rendered here both at compile and at run time.
"""

from __future__ import annotations

import contextlib
import contextvars
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

MAX_LOOP_STEPS = 1_000_000
MAX_OUTPUT = 1_000_000
MAX_SECONDS = 2.0
_POWER_BITS = 4096  # `**` on integers: results up to this many bits (a template needs no bigger number)


class TemplateLimit(RuntimeError):
    """A template render ran past one of the bounds of this module."""


class _Budget:
    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_SECONDS
        self.steps = 0
        self.output = 0

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"the template ran for more than {MAX_SECONDS:g} s in one render (the bound on "
                                "templates); a template renders one example in milliseconds: fix its loops")

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_LOOP_STEPS:
            raise TemplateLimit(f"the template ran more than {MAX_LOOP_STEPS:,} loop steps in one render (the bound "
                                "on templates); fix its loops (nested loops multiply)")
        if self.steps % 1024 == 0:
            self.clock()

    def size(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_OUTPUT:
            raise TemplateLimit(f"the template built a value of {len(value):,} items, more than {MAX_OUTPUT:,} (the "
                                "bound on templates); fix the expression that repeats or joins it")
        self.clock()
        return value


_BUDGET: contextvars.ContextVar[_Budget] = contextvars.ContextVar("ftc_template_budget")


def _budget() -> _Budget:
    budget = _BUDGET.get(None)
    return budget if budget is not None else _Budget()  # outside a render (jinja2 folding constants): per call


def _loop(iterable: Any) -> Any:
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _check_operands(operator: str, left: Any, right: Any) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if right * max(1, abs(left).bit_length()) > _POWER_BITS:
            raise TemplateLimit(f"the template computes {left} ** {right}, a number of more than {_POWER_BITS} bits "
                                "(the bound on templates)")
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_OUTPUT:
                raise TemplateLimit(f"the template repeats a value {times:,} times, more than {MAX_OUTPUT:,} items "
                                    "(the bound on templates)")


def _check_arguments(what: str, args: Any, kwargs: dict[str, Any]) -> None:
    """Refuse a count past MAX_OUTPUT before the call allocates it (`'x'.ljust(10**10)`, `center(10**10)`)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT:
            raise TemplateLimit(f"{what} in the template got {value:,}, more than {MAX_OUTPUT:,} (the bound on "
                                "templates)")


def _bounded_filter(function: Any) -> Any:
    skip = 2 if hasattr(function, "jinja_pass_arg") else 1  # (context or environment,) value, then the arguments

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments("a filter", args[skip:], kwargs)
        return _budget().size(function(*args, **kwargs))

    for name in ("jinja_pass_arg", "__name__", "__doc__"):  # pass_context and friends keep working
        if hasattr(function, name):
            setattr(bounded, name, getattr(function, name))
    return bounded


_CLASSES: dict[str, Any] = {}


def _classes() -> tuple[Any, Any]:
    """(the bounded Environment class, its Template class), defined on first use (jinja2 loads here)."""
    if not _CLASSES:
        from jinja2 import Template, nodes
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        from jinja2.visitor import NodeTransformer

        class Bound(NodeTransformer):  # every loop's iterable and every `~` through the budget
            def visit_For(self, node: Any) -> Any:
                self.generic_visit(node)
                node.iter = nodes.Filter(node.iter, "ftc_loop", [], [], None, None, lineno=node.lineno)
                return node

            def visit_Concat(self, node: Any) -> Any:
                self.generic_visit(node)
                return nodes.Filter(node, "ftc_size", [], [], None, None, lineno=node.lineno)

        class BoundedTemplate(Template):
            def render(self, *args: Any, **kwargs: Any) -> str:
                token = _BUDGET.set(budget := _Budget())
                try:
                    parts = []
                    for chunk in self.root_render_func(self.new_context(dict(*args, **kwargs))):
                        budget.output += len(chunk)
                        if budget.output > MAX_OUTPUT:
                            raise TemplateLimit(f"the template rendered more than {MAX_OUTPUT:,} characters (the "
                                                "bound on templates); fix its loops")
                        budget.clock()
                        parts.append(chunk)
                    return "".join(parts)
                except Exception:  # noqa: BLE001 - jinja2's own handler: located template tracebacks
                    self.environment.handle_exception()
                finally:
                    _BUDGET.reset(token)

        class BoundedEnvironment(ImmutableSandboxedEnvironment):
            template_class = BoundedTemplate
            intercepted_binops = frozenset({"*", "**", "+"})

            def __init__(self, **options: Any) -> None:
                super().__init__(**options)
                self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}
                self.filters["ftc_loop"] = _loop
                self.filters["ftc_size"] = lambda value: _budget().size(value)

            def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja2's
                _check_arguments("a call", args, kwargs)
                return _budget().size(super().call(__context, __obj, *args, **kwargs))

            def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
                _check_operands(operator, left, right)
                return _budget().size(super().call_binop(context, operator, left, right))

            def _generate(self, source: Any, name: Any, filename: Any, defer_init: bool = False) -> Any:
                return super()._generate(Bound().visit(source), name, filename, defer_init=defer_init)

        _CLASSES["env"], _CLASSES["template"] = BoundedEnvironment, BoundedTemplate
    return _CLASSES["env"], _CLASSES["template"]


def bounded_environment(**options: Any) -> Any:
    """A jinja2 ImmutableSandboxedEnvironment (with `options`) whose renders are bounded; filters added
    to it afterwards are bounded by time only: wrap them with `bounded_filter`."""
    environment_class, _ = _classes()
    return environment_class(**options)


def bounded_filter(function: Any) -> Any:
    """`function` as a filter of a bounded environment (its result's size and the time are checked)."""
    return _bounded_filter(function)


@contextlib.contextmanager
def deadline(seconds: float = MAX_SECONDS) -> Iterator[None]:
    """Raise TemplateLimit in the block after `seconds` of wall-clock time (a SIGALRM timer; the main thread
    of a POSIX process only, and only when no other timer is set: elsewhere the block runs unbounded)."""
    if (not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TemplateLimit(f"the template ran for more than {seconds:g} s in one render (the bound on templates); "
                            "a template renders one example in milliseconds: fix its loops")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
