#!/usr/bin/env python3
"""What `make package-check` runs: test_packages.py, then test_install.py,
numbered as one run, ending with `N passed, N failed`.

    run.py --debs DIR [--rpms DIR]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_install  # noqa: E402
import test_packages  # noqa: E402
from tap import Reporter  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--debs", required=True)
    ap.add_argument("--rpms")
    a = ap.parse_args()
    rep = Reporter()
    t0 = time.monotonic()
    test_packages.main(["--debs", a.debs] + (["--rpms", a.rpms] if a.rpms else []), rep)
    test_install.main(["--debs", a.debs], rep)
    print(f"# packaging tests took {time.monotonic() - t0:.0f}s")
    return rep.summary()


if __name__ == "__main__":
    sys.exit(main())
