#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The relay store's contract test against a real PostgreSQL.

Starts a throwaway server (tests/pg.py), runs the unit-test binary
test_store with MLC_TEST_PG set to its conninfo, stops the server. The
binary's output passes through; the exit status is the binary's (or 1 when
the server cannot start).

    python3 tests/integration/test_store_pg.py --bin build/dev/tests/test_store
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pg  # noqa: E402  (tests/pg.py)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the built test_store binary")
    ap.add_argument("--timeout", type=int, default=600, help="seconds the binary may run")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        print(f"test_store_pg: {binary} is not an executable: build it first "
              f"(make O=build/dev DEVELOPER=1 build/dev/tests/test_store)", file=sys.stderr)
        print("0 passed, 1 failed")
        return 1
    tmpdir = tempfile.mkdtemp(prefix="mlc-store-pg-")
    stop = None
    try:
        try:
            conninfo, stop = pg.start(tmpdir)
        except RuntimeError as e:
            print(f"test_store_pg: cannot start PostgreSQL: {e}", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1
        print(f"# PostgreSQL: {conninfo}", flush=True)
        env = dict(os.environ, MLC_TEST_PG=conninfo)
        try:
            rc = subprocess.call([binary], env=env, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"test_store_pg: {binary} ran longer than {args.timeout} s", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1
        if rc != 0:
            print(f"test_store_pg: {os.path.basename(binary)} exited with {rc}", file=sys.stderr)
        return 0 if rc == 0 else 1
    finally:
        if stop is not None:
            stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
