"""Fail unless the pytest report has at least one test (run or skipped) per `def test_` in tests/.

Guards against a run that exits 0 without running the suite (Jittor can exit 0 while importing).
"""
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def defined_tests(folder):
    return sum(len(re.findall(r"^def test_", p.read_text(), re.M)) for p in folder.glob("test_*.py"))


def main(report):
    if not Path(report).is_file():
        sys.exit(f"{report}: no pytest report was written, so the test suite did not run to the end")
    suites = list(ET.parse(report).getroot().iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "skipped", "failures", "errors")}
    expected = defined_tests(Path(__file__).parent)
    print(f"{report}: {counts['tests']} tests ({counts['skipped']} skipped) for {expected} "
          f"test functions defined")
    if counts["tests"] < expected:
        sys.exit(f"{report}: only {counts['tests']} tests ran, but tests/ defines {expected}")


if __name__ == "__main__":
    main(sys.argv[1])
