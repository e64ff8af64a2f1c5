"""Summarises the compat suites' JUnit XML against the expected-failures list.

usage: report.py EXPECTED_FAILURES_FILE RESULT.xml...
Exit status 1 if a test failed that the list does not name (by glob on its id).
"""
import fnmatch
import os
import sys
import xml.etree.ElementTree as ET


def load_expected(path):
    patterns = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            pattern, _, reason = line.partition("#")
            pattern = pattern.strip()
            if pattern:
                patterns.append((pattern, reason.strip()))
    return patterns


def outcome(case):
    for tag in ("failure", "error"):
        if case.find(tag) is not None:
            return "failed"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def main():
    expected = load_expected(sys.argv[1])
    totals = {"passed": 0, "failed": 0, "skipped": 0, "expected": 0}
    unexpected = []
    for xml in sys.argv[2:]:
        label = os.path.basename(xml).removesuffix(".xml")
        counts = {"passed": 0, "failed": 0, "skipped": 0, "expected": 0}
        for case in ET.parse(xml).getroot().iter("testcase"):
            test_id = f"{case.get('classname')}::{case.get('name')}"
            result = outcome(case)
            if result == "failed":
                if any(fnmatch.fnmatchcase(test_id, p) for p, _ in expected):
                    result = "expected"
                else:
                    unexpected.append(f"{label}: {test_id}")
            counts[result] += 1
        print(f"{label}: {counts['passed']} passed, {counts['failed']} failed, "
              f"{counts['skipped']} skipped, {counts['expected']} expected failures")
        for key in totals:
            totals[key] += counts[key]
    for name in unexpected:
        print(f"UNEXPECTED FAILURE {name}")
    print(f"expected failures (need TLS or the internet): {totals['expected']}")
    print(f"compat: {totals['passed']} passed, {totals['failed']} failed, "
          f"{totals['skipped'] + totals['expected']} skipped")
    return 1 if unexpected or totals["passed"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
