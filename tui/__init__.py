"""The run monitor. Reads only runs/<name>/<id>/events.jsonl (and plan.json): state.py folds the events
into a RunState; app.py is the Textual app (`make_app(run_dir)`), runs.py the list of runs, summary.py
the plain views. Textual is imported only by app.py, runs.py and widgets.py."""
