"""ftc.core: what the compiler, the runtime, the CLI and the monitor share (errors, events, the
run directory's layout, bundled models, the data stage). It imports nothing else of ftc, and
neither torch nor pydantic at import time."""
