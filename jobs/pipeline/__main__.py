"""`python -m jobs.pipeline PIPELINE_ID`: run a prepared pipeline detached (the page starts this)."""

import sys

import core  # noqa: F401  (telemetry off first)
from core.errors import StudioError
from jobs.pipeline.runner import run


def main(pipeline_id: str) -> int:
    try:
        run(pipeline_id, log=lambda text: print(text, flush=True))
    except StudioError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    print("Pipeline succeeded.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
