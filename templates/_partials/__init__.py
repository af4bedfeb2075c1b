"""Shared sections of train.py."""
