"""Input files of `gaussflow solve --input` (`.npz` or JSON): reading and strict checks.

The values of a file obey the same rules as the API (`gaussflow._checks`): numbers only — no
strings (also not numeric strings such as `"0.5"`), no `null`, no booleans (`true` is not
the integer 1) — scalars where a scalar is expected (`t1`, `beta`, `c`, `eps`, `bias`),
an integer for `heads`. Every error names the file and the key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import registry, variants  # noqa: F401  (importing variants registers the built-ins)
from ._common import UsageError

if TYPE_CHECKING:
    import numpy as np

    from ..field import Field
    from ..gaussian import Gaussian


def _solve_keys() -> dict:
    """`{variant: (required keys, optional keys)}` read from the declarations (`input_keys`)."""
    return {name: cls.input_keys() for name, cls in registry.variants().items()
            if callable(getattr(cls, "input_keys", None))}


#: Keys of a `gaussflow solve --input` file (`.npz` or JSON), per variant (from the
#: declarations). Every variant also takes `mean` (d,), `cov` (d, d) (required) and `t1`
#: (optional; `--t1` overrides it).
SOLVE_KEYS = _solve_keys()
#: Keys that hold one number (`beta` of multihead may also be one per head), and those > 0.
SCALAR_KEYS = ("t1", *sorted({k for cls in registry.variants().values()
                              for k in getattr(cls, "scalar_keys", lambda: ())()}))
POSITIVE_KEYS = tuple(sorted({k for cls in registry.variants().values()
                              for k in getattr(cls, "positive_keys", lambda: ())()}))


def read_arrays(path: str) -> dict[str, Any]:
    """The arrays of an `.npz` or JSON file as a dict (errors name the file and the fix).

    `.npz` entries are NumPy arrays; JSON values are returned as parsed (checked later by
    `file_value`). Raises `UsageError` for a missing, unreadable or malformed file.
    """
    import numpy as np

    if not os.path.isfile(path):
        raise UsageError(f"input file {path!r} does not exist; pass an existing .npz or .json file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:
            raise UsageError(f"cannot read {path!r} as .npz ({type(e).__name__}: {e}); write it "
                             "with numpy.savez") from None
    if ext == ".json":
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (ValueError, UnicodeDecodeError) as e:
            raise UsageError(f"{path!r} is not valid JSON ({e}); fix the file") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path!r} must hold a JSON object of named arrays, e.g. "
                             '{"Q": [[1, 0], [0, 1]], ...}')
        return data
    raise UsageError(f"input file {path!r} must end in .npz or .json")


def _walk(path, key, value):
    """Reject JSON values that are not (nested lists of) numbers, naming the key."""
    if value is None:
        raise UsageError(f"{path}: key {key!r} contains null; give numbers (or remove the key "
                         "if it is optional)")
    if isinstance(value, bool):
        raise UsageError(f"{path}: key {key!r} contains the boolean {json.dumps(value)}; give "
                         "numbers")
    if isinstance(value, str):
        raise UsageError(f"{path}: key {key!r} contains the string {value!r}; give numbers "
                         "without quotes")
    if isinstance(value, dict):
        raise UsageError(f"{path}: key {key!r} contains an object; give a number or nested "
                         "lists of numbers")
    if isinstance(value, (list, tuple)):
        for v in value:
            _walk(path, key, v)


def file_value(path: str, key: str, value: Any) -> np.ndarray | int:
    """`value` of `key` in file `path` as a float array (or the int of `heads`).

    Raises `UsageError`, naming the file and the key, for anything but finite real numbers (or a
    positive integer for `heads`).
    """
    import numpy as np

    if value is None:
        raise UsageError(f"{path}: key {key!r} is null; give a value or remove the key if it is "
                         "optional (see gaussflow solve --help)")
    if isinstance(value, np.ndarray):  # from .npz
        if value.dtype.kind not in "iuf":
            raise UsageError(f"{path}: key {key!r} has dtype {value.dtype}; save real numbers "
                             "(float or int)")
    else:
        _walk(path, key, value)
    if key == "heads":
        raw = np.asarray(value)
        if raw.ndim != 0 or raw.dtype.kind not in "iu" or int(raw) < 1:
            raise UsageError(f"{path}: key 'heads' must be a positive integer (e.g. 2), got "
                             f"{_show(value)}")
        return int(raw)
    try:
        arr = np.asarray(value, dtype=float)
    except OverflowError:
        raise UsageError(f"{path}: key {key!r} holds a number too large for a float") from None
    except (TypeError, ValueError):
        raise UsageError(f"{path}: key {key!r} is a ragged nested list; every row must have "
                         "the same length") from None
    if not np.all(np.isfinite(arr)):
        raise UsageError(f"{path}: key {key!r} contains NaN or inf; pass finite values")
    return arr


def _show(value) -> str:
    text = repr(value.tolist() if hasattr(value, "tolist") else value)
    return text if len(text) < 60 else text[:57] + "..."


def _scalar(path, key, arr, positive=False):
    if arr.ndim != 0:
        raise UsageError(f"{path}: key {key!r} must be a single number, got shape "
                         f"{arr.shape} ({_show(arr)})")
    v = float(arr)
    if positive and not v > 0:
        raise UsageError(f"{path}: key {key!r} must be > 0, got {v:g}")
    return v


def _api(path, build, *args, **kw):
    """Call an API constructor; its ValueError/TypeError (naming the key) gets the file path."""
    try:
        return build(*args, **kw)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path}: {e}") from None


def state_from_arrays(arrays: Mapping[str, Any], path: str,
                      d: int | None = None) -> tuple[Gaussian, float | None]:
    """`(g0, t1 or None)` from the keys `mean`, `cov` (required), `t1` of a file.

    Parameters
    ----------
    arrays : Mapping of str to Any
        The file's values (`read_arrays`); `mean` defaults to zero.
    path : str
        The file name, for the errors.
    d : int, optional
        The dimension the state must have (the weights').

    Returns
    -------
    tuple of (Gaussian, float or None)
        The initial Gaussian and the file's `t1` (`None` when absent).
    """
    import numpy as np

    from ..gaussian import Gaussian

    if arrays.get("cov") is None:
        raise UsageError(f"{path}: key 'cov' (d, d) is missing or null; add the initial "
                         "covariance")
    cov = file_value(path, "cov", arrays["cov"])
    cov = cov.reshape(1, 1) if cov.ndim == 0 else cov
    mean = (np.zeros(d if d is not None else (cov.shape[0] if cov.ndim else 1))
            if "mean" not in arrays else file_value(path, "mean", arrays["mean"]))
    mean = mean.reshape(1) if mean.ndim == 0 else mean
    t1 = (None if "t1" not in arrays
          else _scalar(path, "t1", file_value(path, "t1", arrays["t1"]), positive=True))
    g0 = _api(path, Gaussian, mean, cov)
    if d is not None and g0.dim != d:
        raise UsageError(f"{path}: mean and cov are for d = {g0.dim}, but the weights have "
                         f"d = {d}")
    return g0, t1


def problem_from_arrays(variant: str, arrays: Mapping[str, Any],
                        path: str = "input") -> tuple[Field, Gaussian, float | None]:
    """`(field, g0, t1 or None)` from named arrays (keys in `SOLVE_KEYS`).

    Parameters
    ----------
    variant : str
        A variant name of `SOLVE_KEYS`.
    arrays : Mapping of str to Any
        The named values (`read_arrays`), checked strictly (see the module docstring).
    path : str
        The file name, for the errors.

    Returns
    -------
    tuple of (Field, Gaussian, float or None)
        The field, the initial Gaussian and the file's `t1` (`None` when absent).

    Raises
    ------
    UsageError
        For an unknown variant, unknown, missing or null keys, or values the API rejects (the
        error names the file).
    """
    if variant not in SOLVE_KEYS:
        raise UsageError(f"solve supports {', '.join(SOLVE_KEYS)}; got {variant!r}")
    required, optional = SOLVE_KEYS[variant]
    allowed = set(required) | set(optional) | {"mean", "cov", "t1"}
    unknown = sorted(set(arrays) - allowed, key=str)
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(map(str, unknown))} for {variant}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    missing = [k for k in required + ("cov",) if k not in arrays]
    if missing:
        raise UsageError(f"{path}: missing key(s) {', '.join(missing)} for {variant}; needed: "
                         f"{', '.join(required + ('cov',))} (see gaussflow solve --help)")
    nulls = [k for k in required + ("cov",) if arrays[k] is None]
    if nulls:
        raise UsageError(f"{path}: key(s) {', '.join(nulls)} are null (a missing value); give "
                         "numbers (see gaussflow solve --help)")
    a = {k: file_value(path, k, arrays[k]) for k in required + optional if k in arrays}
    for k in SCALAR_KEYS:
        if k in a and not (k == "beta" and variant == "multihead" and a[k].ndim == 1):
            a[k] = _scalar(path, k, a[k], positive=k in POSITIVE_KEYS)
    field = _api(path, registry.lookup(variant).from_inputs, **a)
    g0, t1 = state_from_arrays(arrays, path, d=field.dim)
    return field, g0, t1
