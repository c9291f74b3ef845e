"""Public names imported on first use (PEP 562), so that light modules load without heavy ones.

A package's ``__init__`` lists each public name beside the submodule that defines it and calls
:func:`exports`. ``package.name`` and ``from package import name`` then import that submodule the
first time the name is asked for; ``symtele.study.claims``, for instance, loads without torch.
"""

from __future__ import annotations

import sys
import warnings
from importlib import import_module


def exports(package: str, modules: dict[str, list[str]], renamed: dict[str, str] | None = None):
    """``(__getattr__, __dir__, __all__)`` for ``package``, which import each public name on first use.

    Args:
        package: the package's ``__name__`` (it must be in ``sys.modules``: call this from its ``__init__``).
        modules: each submodule (relative to ``package``) and the public names it defines.
        renamed: an old public name and ``"module:attribute.path"`` (absolute module) of its new home:
            asking for the old name warns with a ``DeprecationWarning`` naming the new one, then returns it.

    Returns:
        The package's module ``__getattr__`` (raising ``AttributeError`` for a name it does not know),
        its ``__dir__``, and ``__all__`` (the public names, sorted).
    """
    where = {name: module for module, names in modules.items() for name in names}
    renamed = dict(renamed or {})
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str):
        if name in where:
            value = getattr(import_module(f"{package}.{where[name]}"), name)
            namespace[name] = value  # later lookups skip this function
            return value
        if name in renamed:
            module, _, path = renamed[name].partition(":")
            warnings.warn(f"{package}.{name} is deprecated; use {module}.{path}", DeprecationWarning, stacklevel=2)
            value = import_module(module)
            for part in path.split("."):
                value = getattr(value, part)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__, sorted(where)
