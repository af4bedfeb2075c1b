"""The Textual monitor (issue: Textual monitor). Reads only runs/<name>/<id>/events.jsonl."""
