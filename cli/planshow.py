"""`ftc plan SPEC`: the estimated peak memory by component against the budget, every decision with its
reason, and (`--probe`) the step time measured on this machine."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ftc.cli.console import SafeConsole


def show_plan(result: Any) -> SafeConsole:
    """Print the memory table and the decisions of a compiled spec; returns the console used."""
    plan = result.plan
    console = SafeConsole()
    if plan.memory is not None:
        table = Table(title=f"estimated peak memory of one step: {result.source.display}")
        table.add_column("component")
        table.add_column("GiB", justify="right")
        table.add_column("share", justify="right")
        total = plan.memory.total
        for key, value in plan.memory.as_dict().items():
            if key == "total":
                continue
            table.add_row(key, f"{value / 2**30:,.2f}", f"{100 * value / total:.0f} %" if total else "")
        table.add_row("total", f"{total / 2**30:,.2f}", "", style="bold")
        if plan.budget_bytes:
            table.add_row("budget", f"{plan.budget_bytes / 2**30:,.2f}",
                          f"{100 * total / plan.budget_bytes:.0f} % used", style="bold")
        console.print(table)
    else:
        console.print("no memory estimate: the model's config is not available offline")
    decisions = Table(title="decisions", show_header=False)
    for reason in plan.reasons:
        topic, _, text = reason.partition(": ")
        decisions.add_row(topic, text)
    console.print(decisions)
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    return console


def show_probe(spec: str, overrides: Any, plan: Any, console: SafeConsole, *, steps: int, timeout: float) -> None:
    """Run train.py for `steps` steps here (cli/probe.py) and print the step time and the plan's total."""
    from ftc.cli.probe import probe
    from ftc.compiler.throughput import duration

    console.print(f"probe: running train.py for {steps} steps on this machine ...", markup=False)
    measured = probe(spec, overrides, steps, timeout)
    total = plan["total_steps"]
    rate = f", {measured.tokens_per_s:,.0f} tokens/s" if measured.tokens_per_s else ""
    console.print(f"measured step time: {duration(measured.seconds_per_step)} per optimizer step (mean of "
                  f"{measured.steps} steps after the first{rate}); the plan's {total or '?'} steps take about "
                  f"{duration(measured.seconds_per_step * total) if total else '?'} (model and data loading not "
                  "counted)", markup=False, soft_wrap=True)
