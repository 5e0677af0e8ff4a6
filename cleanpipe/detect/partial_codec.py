"""Partials as bytes without pickle: arrays in an ``.npz``, their nesting as JSON.

A partitioned run keeps every partition's partial on disk (``OUT/_work/``) so that a rerun can
resume, and reads them back; the output folder may be shared (an ``s3://`` prefix), so loading
must not run code from the file, which unpickling does. The partials are nests of tuples, lists,
dicts, Python scalars, numpy arrays and scalars, and a few frozen dataclasses of the detector's
own (:data:`_CLASSES`); :func:`dumps` writes the arrays with ``np.savez`` and the structure as a
JSON tree, and :func:`loads` reads them with ``allow_pickle=False`` and rebuilds only those
classes.

Examples
--------
>>> from cleanpipe.detect.exactsum import exact_group_sums
>>> part = (3, np.arange(4), exact_group_sums(np.array([0.1, 0.2])), None, {"a": [1.5, "x"]})
>>> back = loads(dumps(part))
>>> back[0], back[1].tolist(), bool(back[2].totals()[0] == part[2].totals()[0]), back[3], back[4]
(3, [0, 1, 2, 3], True, None, {'a': [1.5, 'x']})
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np

from .exactsum import ExactSums
from .mixture import LossHistogram
from .radix import SelectPartial

#: The dataclasses a partial may hold, by name: the only classes :func:`loads` builds.
_CLASSES = {cls.__name__: cls for cls in (ExactSums, LossHistogram, SelectPartial)}
_TREE = "__tree__"


def dumps(obj) -> bytes:
    """``obj`` (a partial) as bytes; raises TypeError for anything :func:`loads` could not rebuild."""
    arrays: list[np.ndarray] = []

    def tree(x):
        if x is None or isinstance(x, (bool, int, float, str)):
            return {"t": "py", "v": x}
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise TypeError("object arrays are not stored")
            arrays.append(x)
            return {"t": "arr", "i": len(arrays) - 1}
        if isinstance(x, np.generic):
            arrays.append(np.asarray(x))
            return {"t": "scalar", "i": len(arrays) - 1}
        if isinstance(x, (tuple, list)):
            return {"t": type(x).__name__, "v": [tree(v) for v in x]}
        if isinstance(x, dict):
            return {"t": "dict", "k": [tree(k) for k in x], "v": [tree(v) for v in x.values()]}
        if dataclasses.is_dataclass(x) and _CLASSES.get(type(x).__name__) is type(x):
            return {"t": "dc", "c": type(x).__name__,
                    "f": {f.name: tree(getattr(x, f.name)) for f in dataclasses.fields(x)}}
        raise TypeError(f"a partial may not hold {type(x).__name__}")

    top = tree(obj)
    buf = io.BytesIO()
    named = {f"a{i}": a for i, a in enumerate(arrays)}
    named[_TREE] = np.frombuffer(json.dumps(top).encode(), dtype=np.uint8)
    np.savez(buf, **named)
    return buf.getvalue()


def loads(data: bytes):
    """The partial :func:`dumps` wrote; never unpickles (``allow_pickle=False``).

    Raises
    ------
    ValueError
        ``data`` is not such a partial (truncated, foreign, or naming a class not in
        :data:`_CLASSES`).
    """
    try:
        return _loads(data)
    except ValueError:
        raise
    except Exception as exc:  # zipfile, json, KeyError...: one kind of failure for the caller
        raise ValueError(f"not a stored partial: {exc}") from None


def _loads(data: bytes):
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    top = json.loads(arrays.pop(_TREE).tobytes().decode())

    def build(node):
        t = node["t"]
        if t == "py":
            return node["v"]
        if t == "arr":
            return arrays[f"a{node['i']}"]
        if t == "scalar":
            return arrays[f"a{node['i']}"][()]
        if t == "tuple":
            return tuple(build(v) for v in node["v"])
        if t == "list":
            return [build(v) for v in node["v"]]
        if t == "dict":
            return {build(k): build(v) for k, v in zip(node["k"], node["v"])}
        if t == "dc":
            cls = _CLASSES[node["c"]]
            fields = {name: build(v) for name, v in node["f"].items()}
            obj = object.__new__(cls)
            for name, value in fields.items():
                object.__setattr__(obj, name, value)
            return obj
        raise ValueError(f"unknown node {t!r}")

    return build(top)
