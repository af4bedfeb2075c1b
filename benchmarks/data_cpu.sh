#!/bin/bash
# CPU seconds (user + sys, workers included) of `ftc data` and of data.py's plain datasets.map baseline on N
# synthetic rows (data.py's conversations and spec), 2 worker processes each, both pinned to one core: a
# sanity ratio for the shared machine, where wall times say little. Not the benchmark (data.py is: wall
# time and memory on an idle machine).
#   benchmarks/data_cpu.sh REPO LABEL [ROWS=20000] [plain]    e.g. benchmarks/data_cpu.sh $PWD new 20000 plain
# REPO is a checkout with its .venv (the plain map side runs with that venv's libraries); CORE=1 by default.
set -euo pipefail
repo=$(cd "$1" && pwd); label=$2; rows=${3:-20000}; core=${CORE:-1}
work=$(mktemp -d /tmp/ftc-data-cpu-XXXX); trap 'rm -rf "$work"' EXIT; cd "$work"
"$repo/.venv/bin/python" - "$repo" "$rows" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import data
data.write_data(Path("chats.jsonl"), int(sys.argv[2]))
Path("s.toml").write_text(
    'name = "bench"\n[model]\nbase = "smollm2-135m-instruct"\n[data]\nsource = "chats.jsonl"\n'
    'format = "chat"\nvalidation = 0.01\nmax_length = 512\n[data.columns]\nmessages = "conversations"\n'
    '[method]\nkind = "lora"\n[train]\nbatch_size = 8\n[hardware]\ndevice = "cpu"\n', encoding="utf-8")
Path("baseline.py").write_text(data.BASELINE, encoding="utf-8")
PY
export FTC_DATA_PROCS=2 FTC_DATA_CACHE="$work/cache" TOKENIZERS_PARALLELISM=false
/usr/bin/time -f "$label rows $rows ftc_data user %U sys %S wall %e" \
    nice -n 19 taskset -c "$core" "$repo/.venv/bin/python" -m ftc.cli.main data s.toml --json > /dev/null
if [ "${4:-}" = plain ]; then
    /usr/bin/time -f "$label rows $rows plain_map user %U sys %S wall %e" \
        nice -n 19 taskset -c "$core" "$repo/.venv/bin/python" baseline.py chats.jsonl "$work/hf-cache" > /dev/null
fi
