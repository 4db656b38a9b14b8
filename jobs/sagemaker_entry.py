"""The entry script of a SageMaker job (staged as `train_entry.py` beside `core/`).

The SDK's torchrun driver runs a script, not a module: this makes the staged `core` package
importable and hands over to `python -m core.training`'s main with the job's `--key value` args.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core.training.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
