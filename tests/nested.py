"""Exact comparison of nested state (state dicts, optimizer states, lists of tensors), shared by the tests."""

from __future__ import annotations

import torch as th


def assert_nested_equal(a, b, where: str = "") -> None:
    """Exact equality of nested dicts / lists / tensors (shape, dtype and values), naming the first difference."""
    if isinstance(a, th.Tensor):
        assert isinstance(b, th.Tensor), where
        assert a.shape == b.shape and a.dtype == b.dtype, where
        assert th.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_nested_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_nested_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
