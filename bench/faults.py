"""The fault-injection suite as a figure: cases tried, cases passed, and cases where something was
lost (a failed case is counted as a loss: each case asserts both the sentence the user sees and
that nothing was lost). Runs `tests/faults/` and the MLflow-server-down case of the tracking
outbox through pytest and writes bench/results/faults.json.

    .venv/bin/python bench/faults.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from repo_on_path import REPO  # first: benchmarks run as files

from bench.common import write_result

SUITES = ["tests/faults", "tests/test_tracking_outbox.py"]


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *SUITES], cwd=REPO)
        seconds = time.perf_counter() - start
        cases = []
        for case in ET.parse(report).getroot().iter("testcase"):
            outcome = "passed"
            if case.find("failure") is not None or case.find("error") is not None:
                outcome = "failed"
            elif case.find("skipped") is not None:
                outcome = "skipped"
            cases.append({"case": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome})
    tried = [c for c in cases if c["outcome"] != "skipped"]
    passed = sum(c["outcome"] == "passed" for c in tried)
    write_result(
        "faults",
        {
            "cases_tried": len(tried),
            "cases_passed": passed,
            "cases_with_loss": len(tried) - passed,
            "ratio": round(passed / len(tried), 3) if tried else None,
            "seconds": round(seconds, 1),
            "cases": cases,
        },
    )


if __name__ == "__main__":
    main()
