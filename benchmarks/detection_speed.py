"""Label-error detection speed and memory: cleanpipe's default vs cleanlab 2.9's default.

Both tools get the same synthetic ``labels`` / ``pred_probs`` (N x K, float32 or float64), written
once per configuration to a temporary directory. Every call runs in a fresh child process that
loads the arrays fully into memory first; the child then times only the call (``perf_counter``)
and measures the extra peak RSS of the call (peak RSS during the call minus RSS just before it;
the kernel's peak counter, ``VmHWM``, is reset right before the call where Linux allows it;
``ru_maxrss`` is the fallback elsewhere).

Run from the repository root::

    python benchmarks/detection_speed.py            # N in {1e5, 1e6}, K in {10, 100}, f32/f64
    python benchmarks/detection_speed.py --quick    # N = 1e5 only
    python benchmarks/detection_speed.py --write    # also update benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

try:
    from ._common import (
        REPO_ROOT,
        cleanpipe_version,
        load_cleanpipe,
        markdown_table,
        progress,
        provenance_block,
        replace_section,
    )
except ImportError:  # run as a script: benchmarks/ is on sys.path
    from _common import (
        REPO_ROOT,
        cleanpipe_version,
        load_cleanpipe,
        markdown_table,
        progress,
        provenance_block,
        replace_section,
    )

SCRIPT = Path(__file__).resolve()
MIB = 2**20
TARGET_N, TARGET_K = 1_000_000, 100
TARGET_SPEEDUP = 10.0


# --------------------------------------------------------------------------------------------------
# Synthetic data (generated in the parent, once per configuration)
# --------------------------------------------------------------------------------------------------


def generate(path: Path, n: int, k: int, dtype: str, seed: int = 0, chunk: int = 100_000) -> None:
    """Write ``labels.npy`` (int64) and ``pred_probs.npy`` (``dtype``) for one configuration.

    Each row's probabilities are a Dirichlet draw concentrated on a hidden true class (mean
    probability 0.8 there); the given label is drawn from the row's probabilities, then 5% of the
    labels are replaced by a uniformly random class. Generated in chunks to bound memory.
    """
    rng = np.random.default_rng([seed, n, k])
    labels = np.lib.format.open_memmap(path / "labels.npy", mode="w+", dtype=np.int64, shape=(n,))
    probs = np.lib.format.open_memmap(path / "pred_probs.npy", mode="w+", dtype=dtype, shape=(n, k))
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        true = rng.integers(0, k, size=m)
        alpha = np.full((m, k), 1.0 / (k - 1))
        alpha[np.arange(m), true] = 4.0
        p = rng.standard_gamma(alpha)
        p /= p.sum(axis=1, keepdims=True)
        cum = p.cumsum(axis=1)
        given = np.minimum((cum < rng.random((m, 1)) * cum[:, -1:]).sum(axis=1), k - 1)
        flip = rng.random(m) < 0.05
        given[flip] = rng.integers(0, k, size=int(flip.sum()))
        labels[start:start + m] = given
        probs[start:start + m] = p.astype(dtype)
    labels.flush()
    probs.flush()
    del labels, probs


# --------------------------------------------------------------------------------------------------
# Child process: one measured call
# --------------------------------------------------------------------------------------------------


def current_rss_kib() -> int:
    """Resident set size now, in KiB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB.

    Reads the address space's own high-water mark (``VmHWM``), which ``reset_peak_rss`` can reset.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is only the fallback: on Linux it is also raised to the
    parent's peak at ``exec`` time, so in a child process it can be stuck above the real peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); ``False`` if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def tool_function(tool: str, cleanlab_n_jobs: int | None):
    """The function under test, with its (slow) imports done before measuring."""
    if tool in ("cleanpipe", "fake"):
        find, _, _ = load_cleanpipe(fake=(tool == "fake"))
        return find
    if tool == "cleanlab":
        from cleanlab.filter import find_label_issues

        if cleanlab_n_jobs is None:
            return find_label_issues
        return lambda labels, pred_probs: find_label_issues(labels, pred_probs, n_jobs=cleanlab_n_jobs)
    raise ValueError(f"unknown tool {tool!r}")


def child(tool: str, data: Path, cleanlab_n_jobs: int | None) -> dict:
    """Load the data, then time one call and measure its extra peak RSS."""
    labels = np.load(data / "labels.npy")
    pred_probs = np.load(data / "pred_probs.npy")
    fn = tool_function(tool, cleanlab_n_jobs)
    gc.collect()
    peak_reset = reset_peak_rss()
    rss_before = current_rss_kib()
    peak_before = peak_rss_kib()
    start = time.perf_counter()
    result = fn(labels, pred_probs)
    seconds = time.perf_counter() - start
    peak_after = peak_rss_kib()
    n_flagged = int(np.sum(result["is_label_issue"] if isinstance(result, pd.DataFrame) else result))
    return {
        "tool": tool,
        "seconds": seconds,
        "extra_peak_mib": max(peak_after - rss_before, 0) / 1024,
        # Peak before the call above the RSS before it: an upper bound on the measurement error
        # (0 when the peak counter could be reset).
        "slack_mib": max(peak_before - rss_before, 0) / 1024,
        "peak_reset": peak_reset,
        "n_flagged": n_flagged,
    }


# --------------------------------------------------------------------------------------------------
# Parent: configurations, child runs, tables
# --------------------------------------------------------------------------------------------------


@dataclass
class Config:
    n: int
    k: int
    dtype: str

    @property
    def probs_mib(self) -> float:
        return self.n * self.k * np.dtype(self.dtype).itemsize / MIB


def run_child(tool: str, data: Path, timeout: float, cleanlab_n_jobs: int | None) -> dict:
    """One measured call in a fresh interpreter; on failure the dict has an ``error``."""
    cmd = [sys.executable, str(SCRIPT), "--child", tool, "--data", str(data)]
    if cleanlab_n_jobs is not None:
        cmd += ["--cleanlab-n-jobs", str(cleanlab_n_jobs)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"tool": tool, "error": f"timeout after {timeout:.0f}s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"tool": tool, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(runs: list[dict]) -> dict:
    """Combine repeated runs: minimum time, maximum extra memory."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    best = dict(min(ok, key=lambda r: r["seconds"]))
    best["extra_peak_mib"] = max(r["extra_peak_mib"] for r in ok)
    return best


def measure(config: Config, tools: Sequence[str], args: argparse.Namespace, workdir: Path) -> dict:
    """Generate the data for ``config`` and measure each tool on it."""
    data = workdir / f"n{config.n}_k{config.k}_{config.dtype}"
    data.mkdir()
    start = time.perf_counter()
    generate(data, config.n, config.k, config.dtype, seed=args.seed)
    progress(f"  generated {config.probs_mib:.0f} MiB in {time.perf_counter() - start:.1f}s")
    row = {"N": config.n, "K": config.k, "dtype": config.dtype, "probs_mib": config.probs_mib}
    try:
        for tool in tools:
            label = "cleanpipe" if tool == "fake" else tool
            if tool == "cleanlab" and config.n > args.max_cleanlab_n:
                row[f"{label}_error"] = "skipped (--max-cleanlab-n)"
                continue
            runs = [run_child(tool, data, args.timeout, args.cleanlab_n_jobs) for _ in range(args.repeat)]
            result = best_of(runs)
            if "error" in result:
                row[f"{label}_error"] = result["error"]
                progress(f"  {label}: {result['error']}")
                continue
            progress(f"  {label}: {result['seconds']:.3f}s, extra peak {result['extra_peak_mib']:.1f} MiB")
            for key in ("seconds", "extra_peak_mib", "slack_mib", "n_flagged"):
                row[f"{label}_{key}"] = result[key]
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return row


def results_table(rows: list[dict]) -> pd.DataFrame:
    """Side-by-side table with speedup (cleanlab time / cleanpipe time) and memory ratio."""
    df = pd.DataFrame(rows)
    for col in ("cleanpipe_seconds", "cleanlab_seconds", "cleanpipe_extra_peak_mib",
                "cleanlab_extra_peak_mib"):
        if col not in df:
            df[col] = np.nan
    return pd.DataFrame(
        {
            "N": df["N"],
            "K": df["K"],
            "dtype": df["dtype"],
            "pred_probs MiB": df["probs_mib"],
            "cleanpipe s": df["cleanpipe_seconds"],
            "cleanlab s": df["cleanlab_seconds"],
            "speedup": df["cleanlab_seconds"] / df["cleanpipe_seconds"],
            "cleanpipe extra MiB": df["cleanpipe_extra_peak_mib"],
            "cleanlab extra MiB": df["cleanlab_extra_peak_mib"],
            "cleanlab/cleanpipe mem": df["cleanlab_extra_peak_mib"] / df["cleanpipe_extra_peak_mib"],
            "cleanpipe extra / probs": df["cleanpipe_extra_peak_mib"] / df["probs_mib"],
        }
    )


def target_lines(table: pd.DataFrame) -> list[str]:
    """PASS/FAIL of the targets at N=1e6, K=100 (one line per dtype measured there)."""
    lines = []
    at_target = table[(table["N"] == TARGET_N) & (table["K"] == TARGET_K)]
    if at_target.empty:
        return [f"[N/A ] targets at N={TARGET_N:.0e}, K={TARGET_K}: configuration not run"]
    for _, r in at_target.iterrows():
        where = f"N={TARGET_N:.0e}, K={TARGET_K}, {r['dtype']}"
        speed_ok = None if np.isnan(r["speedup"]) else bool(r["speedup"] >= TARGET_SPEEDUP)
        mem_ok = None if np.isnan(r["cleanpipe extra MiB"]) else bool(r["cleanpipe extra MiB"] <= r["pred_probs MiB"])
        lines.append(f"[{_status(speed_ok)}] {where}: cleanpipe >= {TARGET_SPEEDUP:.0f}x faster than "
                     f"cleanlab's default (speedup {r['speedup']:.1f}x)")
        lines.append(f"[{_status(mem_ok)}] {where}: cleanpipe extra peak memory <= size of pred_probs "
                     f"({r['cleanpipe extra MiB']:.0f} MiB vs {r['pred_probs MiB']:.0f} MiB)")
    return lines


def _status(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "N/A "}[ok]


def notes(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Errors/skips and measurement caveats worth printing under the table."""
    out = []
    for r in rows:
        for tool in ("cleanpipe", "cleanlab"):
            if f"{tool}_error" in r:
                out.append(f"N={r['N']}, K={r['K']}, {r['dtype']}: {tool} {r[f'{tool}_error']}")
            slack = r.get(f"{tool}_slack_mib", 0.0)
            if slack > 0.05 * r["probs_mib"]:
                out.append(f"N={r['N']}, K={r['K']}, {r['dtype']}: {tool} extra memory may be off by "
                           f"up to {slack:.0f} MiB (peak counter could not be reset)")
    n_jobs = "its default n_jobs (all cores)" if args.cleanlab_n_jobs is None else f"n_jobs={args.cleanlab_n_jobs}"
    out.append(f"cleanlab runs with {n_jobs}; the memory of its worker processes (if any) is not "
               "counted, only that of the calling process.")
    out.append(f"Times are the best of {args.repeat} fresh process(es); memory the worst.")
    return out


def parse_sizes(value: str) -> list[int]:
    return [int(float(v)) for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e5 only")
    parser.add_argument("--sizes", type=parse_sizes, default=None, help="comma list of N (default 1e5,1e6)")
    parser.add_argument("--ks", type=parse_sizes, default=[10, 100], help="comma list of K (default 10,100)")
    parser.add_argument("--dtypes", default="float32,float64", help="comma list (default float32,float64)")
    parser.add_argument("--max-cleanlab-n", type=float, default=1e6,
                        help="skip cleanlab above this N (default 1e6)")
    parser.add_argument("--cleanlab-n-jobs", type=int, default=None,
                        help="pass n_jobs to cleanlab (default: cleanlab's own default)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per tool and configuration")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    parser.add_argument("--no-cleanlab", action="store_true", help="measure cleanpipe only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fake-cleanpipe", action="store_true",
                        help="use an argmax != label stand-in instead of cleanpipe.find_label_issues")
    parser.add_argument("--write", action="store_true",
                        help="replace the '## Detection speed' section of benchmarks/RESULTS.md")
    parser.add_argument("--child", choices=("cleanpipe", "cleanlab", "fake"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data, args.cleanlab_n_jobs)))
        return 0

    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    configs = [Config(n, k, d.strip()) for n in sizes for k in args.ks for d in args.dtypes.split(",")]
    tools = ["fake" if args.fake_cleanpipe else "cleanpipe"] + ([] if args.no_cleanlab else ["cleanlab"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="cleanpipe-speed-") as tmp:
        for i, config in enumerate(configs, 1):
            progress(f"[{i}/{len(configs)}] N={config.n}, K={config.k}, {config.dtype}")
            rows.append(measure(config, tools, args, Path(tmp)))

    table = results_table(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    print()
    print("\n".join(target_lines(table)))
    print("\n".join(f"note: {n}" for n in notes(rows, args)))

    if args.write:
        version = cleanpipe_version(args.fake_cleanpipe)
        body = "\n".join([
            provenance_block("detection_speed.py", version),
            markdown_table(table),
            "",
            *(f"- {line}" for line in target_lines(table)),
            "",
            *(f"- {n}" for n in notes(rows, args)),
        ])
        replace_section("Detection speed", body)
        progress("wrote the 'Detection speed' section of benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
