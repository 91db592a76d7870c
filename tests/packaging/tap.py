"""Shared result printer for the packaging tests: `ok N name` / `not ok N name`."""

import sys
import traceback


class Reporter:
    def __init__(self):
        self.n = 0
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        self.n += 1
        if cond:
            self.passed += 1
            print(f"ok {self.n} {name}", flush=True)
        else:
            self.failed += 1
            print(f"not ok {self.n} {name}", flush=True)
            for line in str(detail).rstrip().splitlines()[-25:]:
                print(f"#   {line}", flush=True)
        return cond

    def run(self, name, fn):
        """fn() returns None/True for success, or a string (the failure detail)."""
        try:
            res = fn()
        except Exception:  # a test that raises is a failure, not the end of the run
            res = traceback.format_exc()
        return self.check(name, res is None or res is True, res if isinstance(res, str) else "")

    def summary(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 else 1


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)
