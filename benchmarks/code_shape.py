"""The shape of the package, by reading its code (nothing is imported or run): lines, functions over
60 lines, imports inside functions, import cycles, and the places each option's default is written.

These are the measures of issue 16 ("One path through the code" in ``benchmarks/RESULTS.md``).
Point ``--repo`` at another checkout (``git worktree add /tmp/before <commit>``) for the numbers
before a change.

Usage::

    python benchmarks/code_shape.py [--repo PATH] [-v]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

#: Every option default, as the value it is written as.
DEFAULTS = {
    "epochs": 40, "batch_size": 256, "lr": 2e-3, "weight_decay": 1e-4, "hidden": (256, 128),
    "dropout": 0.1, "patience": 8, "val_fraction": 0.1, "seed": 0, "device": "auto", "threads": None,
    "mixup": 0.0, "prior_reg": 0.0, "warmup": 5, "noisy_weight": "online", "method": "combined",
    "mixture": "beta", "noisy_threshold": 0.8, "folds": 5, "min_weight": 0.05, "relabel_p_noisy": 0.5,
    "relabel_score": 0.25, "relabel_add": 0.9, "relabel_remove": 0.999, "mode": "relabel",
    "model": "hgb,logreg",
}
#: The training defaults: TrainConfig's 13 fields and the warm-up.
TRAINING = list(DEFAULTS)[:14]
_ALIASES = {"method": {"method", "DEFAULT_METHOD"}, "warmup": {"warmup", "DEFAULT_WARMUP"},
            "noisy_threshold": {"noisy_threshold", "NOISY_THRESHOLD"}, "model": {"model", "DEFAULT_MODEL"},
            "mixture": {"mixture", "DEFAULT_MIXTURE"}, "folds": {"folds", "DEFAULT_FOLDS"},
            "seed": {"seed", "DEFAULT_SEED"},
            **{k: {k, f"DEFAULT_{k.upper()}"} for k in ("min_weight", "relabel_p_noisy", "relabel_score",
                                                       "relabel_add", "relabel_remove")}}


def _literal(node):
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return object()
    return tuple(value) if isinstance(value, list) else value


def _same(value, default) -> bool:
    if isinstance(default, tuple):
        return value == default or value == ",".join(map(str, default))
    return type(value) is type(default) and value == default


def _named_values(node):
    """(name, value node) pairs a node gives a name: defaults, assignments, --options, dict keys."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        pos = a.posonlyargs + a.args
        yield from ((x.arg, d) for x, d in zip(pos[len(pos) - len(a.defaults):], a.defaults))
        yield from ((x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        yield node.target.id, node.value
    elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        yield node.targets[0].id, node.value
    elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str) and node.args[0].value.startswith("--")):
        yield from ((node.args[0].value[2:].replace("-", "_"), kw.value) for kw in node.keywords
                    if kw.arg == "default")
    elif isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                yield k.value, (v.args[0] if isinstance(v, ast.Call) and v.args else v)


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def measure(package: Path) -> dict:
    files = sorted(package.rglob("*.py"))
    trees = {p: ast.parse(p.read_text()) for p in files}
    mods = {_module_name(p, package): p for p in files}
    graph = {m: set() for m in mods}
    long_functions, local_imports, lines = [], [], 0
    places = {k: [] for k in DEFAULTS}
    for m, p in mods.items():
        tree, lines = trees[p], lines + len(p.read_text().splitlines())
        for node in tree.body:  # module-level imports make the import graph
            if isinstance(node, ast.ImportFrom):
                base = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
                if node.level:
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                graph[m] |= {c for c in [target, *(f"{target}.{a.name}" for a in node.names)]
                             if c in mods and c != m}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 60:
                    long_functions.append(f"{p.relative_to(package.parent)}:{node.name}")
                local_imports += [f"{p.relative_to(package.parent)}:{n.lineno}" for n in ast.walk(node)
                                  if isinstance(n, (ast.Import, ast.ImportFrom))]
            for name, value in _named_values(node):
                for key, default in DEFAULTS.items():
                    if name in _ALIASES.get(key, {key}) and _same(_literal(value), default):
                        places[key].append(f"{p.relative_to(package.parent)}:{value.lineno}")
    return {"lines": lines, "long_functions": long_functions, "local_imports": local_imports,
            "cycles": _cycles(graph), "places": places}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("-v", action="store_true", help="list every place, not only the counts")
    args = parser.parse_args(argv)
    m = measure(Path(args.repo) / "cleanpipe")
    print(f"lines in cleanpipe/: {m['lines']:,}")
    print(f"functions over 60 lines: {len(m['long_functions'])}")
    print(f"imports inside functions: {len(m['local_imports'])}")
    print(f"import cycles: {len(m['cycles'])}" + "".join(f"\n  {' <-> '.join(c)}" for c in m["cycles"]))
    print(f"places the training defaults are written: {sum(len(m['places'][k]) for k in TRAINING)}")
    for key, where in m["places"].items():
        print(f"  {key:16s} {len(where):2d}" + (f"  {' '.join(where)}" if args.v else ""))
    if args.v:
        print("\n".join(["functions over 60 lines:", *m["long_functions"],
                         "imports inside functions:", *m["local_imports"]]))


if __name__ == "__main__":
    main()
