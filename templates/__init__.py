"""Jinja templates of the files ftc emits (package data; loaded through a FileSystemLoader)."""
