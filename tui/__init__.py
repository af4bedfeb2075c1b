"""The run monitor. Reads only runs/<name>/<id>/events.jsonl: state.py folds it into a RunState."""
