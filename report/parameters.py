"""Check the user's notebook parameters and write one parameter stamp per notebook.

Parameters come from ``PARAMS`` (``"stem.name=value other=value"``; a name without a stem applies
to every notebook that has it) and from ``PARAMS_FILE`` (YAML, ``{stem: {name: value}}``). Each name
must exist in the notebook's ``parameters`` cell (whose defaults are mostly read from
``symtele.study.settings``) and each value must have the type of its default; otherwise the build
stops here, naming the parameter, before any notebook runs. ``build_dir`` and ``quick`` are set
by the build (``BUILD``, ``QUICK``).

``<build>/params/<stem>.json`` holds the parameters papermill injects into the notebook. It is
rewritten only when they change, so ``make`` reruns a notebook only when its parameters changed.
The defaults read from the notebooks are cached in ``<build>/params/defaults.json`` by the content
hash of the notebook and of the settings.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from symtele.study.results import write_text

RESERVED = {"build_dir": "BUILD=<dir>", "quick": "QUICK=1"}
TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "tuple": list, "dict": dict}


class ParameterError(ValueError):
    """A parameter the build refuses; the message names it."""


def type_name(value) -> str:
    """The type name of a default value, or ``"any"`` for a type the checks do not know (or None)."""
    name = type(value).__name__
    return name if name in TYPES else "any"


def inspect_defaults(path: Path) -> dict:
    """``{name: {"default": repr, "type": type name}}`` from the notebook's ``parameters`` cell.

    Every top-level ``name = value`` (or ``name: type = value``) of the cell is a parameter; the
    cell is run to learn the values, since a default may be read from the writeup's settings
    (``lr = CONVEX.lr``). (``papermill.inspect_notebook`` silently skips a line whose comment
    holds an ``=``, so it cannot be trusted to list them all.)
    """
    import nbformat

    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError(f"notebook {path.stem}: no cell tagged 'parameters'")
    source = cells[0].source
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ParameterError(f"notebook {path.stem}: cannot parse its parameters cell ({error})") from None
    names = []
    for node in tree.body:
        target = (
            node.targets[0]
            if isinstance(node, ast.Assign) and len(node.targets) == 1
            else getattr(node, "target", None)
        )
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(target, ast.Name) and node.value is not None:
            names.append(target.id)
    namespace: dict = {}
    try:
        exec(compile(tree, f"{path.stem} parameters", "exec"), namespace)
    except Exception as error:
        raise ParameterError(
            f"notebook {path.stem}: its parameters cell fails ({type(error).__name__}: {error})"
        ) from None
    return {name: {"default": repr(namespace[name]), "type": type_name(namespace[name])} for name in names}


def _settings_digest() -> str:
    """A digest of the writeup's settings, which the parameters cells read their defaults from."""
    import importlib.util

    origin = importlib.util.find_spec("symtele.study.settings").origin
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()


def load_defaults(notebook_dir: Path, stems: list[str], cache: Path) -> dict:
    """The defaults of every notebook, re-inspecting only the notebooks (or settings) that changed."""
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    result, changed = {}, False
    settings = _settings_digest()
    for stem in stems:
        path = notebook_dir / f"{stem}.ipynb"
        digest = hashlib.sha256(path.read_bytes() + settings.encode()).hexdigest()
        entry = cached.get(stem)
        if entry is None or entry["sha256"] != digest:
            entry, changed = {"sha256": digest, "parameters": inspect_defaults(path)}, True
        missing = [name for name in RESERVED if name not in entry["parameters"]]
        if missing:
            raise ParameterError(f"notebook {stem}: its parameters cell must define {', '.join(missing)}")
        result[stem] = entry
    if changed or set(cached) != set(result):
        write_if_changed(cache, result)
    return {stem: entry["parameters"] for stem, entry in result.items()}


def coerce(label: str, value, spec: dict, text: str | None = None):
    """``value`` checked against the type of the default in ``spec``; ``text`` is its raw form from PARAMS."""
    kind = spec["type"]
    if kind == "str" and text is not None and not isinstance(value, str):
        value = text  # a string parameter takes the text as written
    expected = TYPES.get(kind)
    ok = (
        expected is None
        or (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
        or (kind not in ("int", "float") and isinstance(value, expected))
    )
    if not ok:
        raise ParameterError(
            f"parameter {label}: expected {kind} (the default is {spec['default']}), "
            f"got {type(value).__name__} {text if text is not None else value!r}"
        )
    return float(value) if kind == "float" else value


def parse_value(label: str, text: str):
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError as error:
        raise ParameterError(f"parameter {label}: cannot read the value {text!r} ({error})") from None


def targets(label: str, stem: str | None, name: str, defaults: dict) -> list[str]:
    """The notebooks an assignment applies to; refuses unknown notebooks and parameters."""
    if name in RESERVED:
        raise ParameterError(f"parameter {label}: '{name}' is set by the build; use {RESERVED[name]}")
    if stem is not None:
        if stem not in defaults:
            raise ParameterError(
                f"parameter {label}: no notebook '{stem}' (notebooks: {', '.join(defaults) or 'none'})"
            )
        if name not in defaults[stem]:
            known = ", ".join(n for n in defaults[stem] if n not in RESERVED)
            raise ParameterError(f"parameter {label}: notebook {stem} has no parameter '{name}' (it has: {known})")
        return [stem]
    found = [s for s, params in defaults.items() if name in params]
    if not found:
        raise ParameterError(f"parameter {label}: no notebook has a parameter '{name}'")
    return found


def parse_assignments(params: str, defaults: dict) -> dict:
    """``{stem: {name: value}}`` from a PARAMS string such as ``"02_relu_posscale.epochs=500 seeds=[0,1]"``."""
    overrides: dict = {}
    try:
        items = shlex.split(params)
    except ValueError as error:
        raise ParameterError(f"PARAMS={params!r}: {error}") from None
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ParameterError(f"PARAMS: {item!r} is not of the form [notebook.]name=value")
        stem, dot, name = key.rpartition(".")
        label = f"{key}={text}"
        for target in targets(label, stem if dot else None, name, defaults):
            value = coerce(label, parse_value(label, text), defaults[target][name], text)
            overrides.setdefault(target, {})[name] = value
    return overrides


def parse_file(path: Path, defaults: dict) -> dict:
    """``{stem: {name: value}}`` from a YAML file mapping notebook stems to their parameters."""
    if not path.is_file():
        raise ParameterError(f"PARAMS_FILE={path}: no such file")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"PARAMS_FILE={path}: not valid YAML ({error})") from None
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise ParameterError(f"PARAMS_FILE={path}: expected a mapping of notebook -> {{parameter: value}}")
    overrides: dict = {}
    for stem, values in content.items():
        for name, value in values.items():
            label = f"{stem}.{name} (in {path})"
            targets(label, str(stem), str(name), defaults)
            overrides.setdefault(stem, {})[name] = coerce(label, value, defaults[stem][name])
    return overrides


def parse_quick(text: str) -> bool:
    if text not in ("", "0", "1"):
        raise ParameterError(f"QUICK={text!r}: expected 1 (quick smoke build) or 0")
    return text == "1"


def write_if_changed(path: Path, content) -> bool:
    """Write ``content`` as JSON unless the file already holds exactly that; True when written."""
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def resolve(
    notebook_dir: Path, build: Path, stems: list[str], quick: str, params: str = "", params_file: str = ""
) -> dict:
    """Check every parameter, then write the stamps; returns ``{stem: parameters}``."""
    quick_flag = parse_quick(quick)
    defaults = load_defaults(notebook_dir, stems, build / "params" / "defaults.json")
    overrides = parse_assignments(params, defaults)
    if params_file:
        for stem, values in parse_file(Path(params_file), defaults).items():
            overrides.setdefault(stem, {}).update(values)
    build_dir = os.path.relpath(build.resolve(), notebook_dir.resolve())
    resolved = {}
    for stem in stems:
        resolved[stem] = {"build_dir": build_dir, "quick": quick_flag, **overrides.get(stem, {})}
        write_if_changed(build / "params" / f"{stem}.json", resolved[stem])
    return resolved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", help="the numbered notebooks, without .ipynb")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--quick", default="")
    parser.add_argument("--params", default="")
    parser.add_argument("--params-file", default="")
    args = parser.parse_args(argv)
    try:
        resolve(args.notebooks, args.build, args.stems, args.quick, args.params, args.params_file)
    except ParameterError as error:
        print(f"make report: refused: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
