"""The plan: every setting of a run resolved, typed by section, with its reason and metadata."""

from ftc.compiler.plan.build import build_plan
from ftc.compiler.plan.budget import SAFETY_MARGIN
from ftc.compiler.plan.types import Entry, Meta, Plan, Setting

__all__ = ["SAFETY_MARGIN", "Entry", "Meta", "Plan", "Setting", "build_plan"]
