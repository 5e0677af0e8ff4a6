"""The Quick start's flag step on an idle machine and beside competing CPU-bound jobs, before and
after the run's core budget (issue 19).

Each variant is one checkout of cleanpipe (its path on PYTHONPATH); each run a fresh process of
``cleanpipe flag examples/data/digits_noisy.parquet --id row_id --exclude true_label,is_flipped``
with the Quick start's options. "busy" starts ``--burners`` processes that spin on the CPU for
the whole run. While the flag process runs, its threads (and those of its worker processes) are
counted from /proc every 0.2 s; the table shows the most seen at once.

Usage::

    git worktree add /tmp/cp-before <commit before the budget>
    python benchmarks/thread_budget.py --before /tmp/cp-before [--burners 2] [--write]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _common import (REPO_ROOT, cleanpipe_version, markdown_table, progress, provenance_block,
                     replace_section)

FLAG_ARGS = ["--id", "row_id", "--exclude", "true_label,is_flipped", "--seed", "0", "-q"]


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


def _threads(pid: int) -> int:
    """Threads of ``pid`` and of every process below it."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += len(os.listdir(f"/proc/{p}/task"))
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    todo += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def run_flag(code: Path, data: Path, out: Path) -> tuple[float, int]:
    """Wall seconds and the most threads seen at once, for one flag run of ``code``."""
    env = dict(os.environ, PYTHONPATH=str(code))
    cmd = [sys.executable, "-c", "from cleanpipe.cli import main; main()", "flag", str(data),
           *FLAG_ARGS, "--out", str(out), "--overwrite"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _threads(proc.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"flag failed with {code}: {proc.stderr.read().decode()[-2000:]}")
    return seconds, peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout of cleanpipe before the budget")
    parser.add_argument("--after", default=str(REPO_ROOT), help="checkout after (default: this one)")
    parser.add_argument("--burners", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the table in RESULTS.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="cp-threads-"))
    data = work / "digits_noisy.parquet"
    subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "make_noisy_digits.py"), "--out",
                    str(data), "--no-warehouse"], check=True, capture_output=True)
    rows, load_before = [], os.getloadavg()[0]
    for load in ("idle", "busy"):
        stop = mp.Event()
        burners = [mp.Process(target=_burn, args=(stop,)) for _ in range(args.burners if load == "busy" else 0)]
        for b in burners:
            b.start()
        try:
            for name, code in (("before", Path(args.before)), ("after", Path(args.after))):
                progress(f"{load}: {name}")
                seconds, peak = run_flag(code, data, work / f"{name}.flags.parquet")
                rows.append({"machine": load if load == "idle" else f"{args.burners} CPU-bound jobs beside",
                             "code": name, "seconds": seconds, "peak threads": peak})
        finally:
            stop.set()
            for b in burners:
                b.join()
    table = pd.DataFrame(rows)
    same = (pd.read_parquet(work / "before.flags.parquet").equals(pd.read_parquet(work / "after.flags.parquet")))
    text = markdown_table(table, floatfmt=".1f")
    print(text)
    note = (f"Flags identical before and after: {same}. Cores: {os.cpu_count()}; load average "
            f"when the runs began: {load_before:.1f}.")
    print(note)
    if args.write:
        body = (provenance_block("thread_budget.py", cleanpipe_version()) + "\n" + text +
                "\n" + note + "\n")
        replace_section("Thread budget (Quick start flag step)", body)


if __name__ == "__main__":
    main()
