"""Helpers shared by the benchmark scripts: loading cleanpipe (or a stand-in), versions, Markdown output.

Nothing here imports cleanlab at module level; the scripts do that themselves.
"""

from __future__ import annotations

import datetime
import math
import re
import shlex
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
CACHE_DIR = BENCH_DIR / ".cache"

# Scripts are run as ``python benchmarks/<script>.py``; make the in-tree package importable.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# --------------------------------------------------------------------------------------------------
# cleanpipe or a stand-in
# --------------------------------------------------------------------------------------------------

FAKE_VERSION = "fake (argmax != label stand-in)"


def fake_find_label_issues(labels, pred_probs, *, method="combined", seed=0) -> pd.DataFrame:
    """Stand-in for ``cleanpipe.find_label_issues``: flag rows whose argmax differs from the label.

    ``label_score`` is the self-confidence ``pred_probs[i, labels[i]]``. Used only to develop the
    harness before the real API exists (``--fake-cleanpipe``).
    """
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs)
    predicted = pred_probs.argmax(axis=1)
    score = pred_probs[np.arange(len(labels)), labels].astype(np.float64)
    return pd.DataFrame(
        {
            "given_label": labels.astype(np.int64),
            "predicted_label": predicted.astype(np.int64),
            "label_score": score,
            "p_noisy": 1.0 - score,
            "is_label_issue": predicted != labels,
        }
    )


def load_cleanpipe(fake: bool = False) -> tuple[Callable[..., pd.DataFrame], tuple[str, ...], str]:
    """Return ``(find_label_issues, METHODS, version)`` of cleanpipe, or of the stand-in if ``fake``."""
    if fake:
        return fake_find_label_issues, ("combined",), FAKE_VERSION
    try:
        import cleanpipe
        from cleanpipe.detect import METHODS

        find = cleanpipe.find_label_issues
    except (ImportError, AttributeError) as exc:
        raise SystemExit(
            f"cleanpipe.find_label_issues / cleanpipe.detect.METHODS is not importable ({exc}); "
            "rerun with --fake-cleanpipe to exercise the harness with a stand-in."
        ) from exc
    return find, tuple(METHODS), cleanpipe_version()


def cleanpipe_version(fake: bool = False) -> str:
    """cleanpipe's version (or the stand-in's), falling back to pyproject's version string."""
    if fake:
        return FAKE_VERSION
    try:
        import cleanpipe

        version = getattr(cleanpipe, "__version__", None)
        if version:
            return str(version)
    except Exception:  # a half-edited tree must not stop results from being written
        pass
    try:
        from importlib.metadata import version as dist_version

        return dist_version("cleanpipe")
    except Exception:
        pass
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    return match.group(1) if match else "unknown"


def versions(cleanpipe_ver: str) -> dict[str, str]:
    """Versions of the libraries that matter for the benchmark numbers."""
    import cleanlab
    import sklearn

    return {
        "cleanpipe": cleanpipe_ver,
        "cleanlab": cleanlab.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


# --------------------------------------------------------------------------------------------------
# Markdown output
# --------------------------------------------------------------------------------------------------


def _fmt_cell(value, floatfmt: str) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else format(value, floatfmt)
    return str(value)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".3f", index: bool = False) -> str:
    """Render a DataFrame as a GitHub Markdown table (no ``tabulate`` dependency)."""
    if index:
        df = df.reset_index()
    header = [str(c) for c in df.columns]
    rows = [[_fmt_cell(v, floatfmt) for v in row] for row in df.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    align = ["---:" if num else ":---" for num in numeric]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def command_line(script: str) -> str:
    """The command that produced a result, as a user would retype it from the repository root."""
    return " ".join(["python", f"benchmarks/{script}", *map(shlex.quote, sys.argv[1:])])


def provenance_block(script: str, cleanpipe_ver: str) -> str:
    """Markdown lines with the command line, date and versions."""
    vers = ", ".join(f"{k} {v}" for k, v in versions(cleanpipe_ver).items())
    today = datetime.date.today().isoformat()
    return f"```\n{command_line(script)}\n```\n\nRun on {today} with {vers}.\n"


def replace_section(title: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the ``## {title}`` section of ``path`` with ``body`` (append it if absent).

    A section runs from its ``## `` heading to the next ``## `` heading (deeper headings such as
    ``###`` belong to it) or the end of the file; other sections are left untouched.
    """
    heading = f"## {title}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    new_section = [heading, "", *body.strip("\n").splitlines(), ""]
    if start is None:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *new_section]
    else:
        end = next(
            (j for j in range(start + 1, len(lines)) if re.match(r"^##\s", lines[j])), len(lines)
        )
        lines[start:end] = new_section
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited over fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def progress(message: str) -> None:
    """Progress line on stderr (keeps stdout for the tables)."""
    print(message, file=sys.stderr, flush=True)
