"""Names of a package imported on first use (PEP 562 module `__getattr__` / `__dir__`).

    _EXPORTS = {"SetCriterion": "criterion", "HungarianMatcher": "matcher"}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

`package.SetCriterion` then imports `package.criterion` the first time it is read and keeps the
value in the package's namespace, so later reads are plain attribute look-ups. `zegformer` and
`zegformer.training` use it so that `--help` of every command line imports no torch.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def lazy_exports(module_name: str, table: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(`__getattr__`, `__dir__`) for the package `module_name`.

    Args:
        module_name: the package's `__name__`.
        table: exported name -> the submodule that defines it, relative to the package
            ("loading.factory" for `<package>.loading.factory`).
    """
    exports = dict(table)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", module_name), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module_name])) | set(exports))

    return __getattr__, __dir__
