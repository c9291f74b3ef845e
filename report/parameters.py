"""Check every notebook's parameters before any notebook runs, and write one parameter stamp per notebook.

Parameters come from ``PARAMS`` (``"stem.name=value other=value"``; a name without a stem applies
to every notebook that has it) and from ``PARAMS_FILE`` (YAML, ``{stem: {name: value}}``). A value
is read as a Python literal (``(1, 2)``, ``[1, 2]``, ``1e-4``, ``"text"``) or else as YAML (a bare
word is a string). Each name must be a parameter of the notebook's ``parameters`` cell, and each
value must have the type of its default. ``build_dir``, ``quick`` and ``output_dir`` are set by the
build (``BUILD``, ``QUICK`` and the staging of outputs).

A notebook's parameters are then, in order: the defaults its ``parameters`` cell computes (read from
the writeup's settings, :mod:`symtele.study.settings`), the smoke build's sizes when ``QUICK=1``
(what the cell computes with ``quick = True``), and what the user typed, which wins. Every value is
then checked by the settings objects the cell uses (``CONVEX``, ``MACHINE``, ...): the same checks
the notebook and its experiments run, so a range, a length, a teleport epoch beyond the run or an
unknown optimiser is refused here, naming the notebook and the value, before anything runs.

``<build>/params/<stem>.json`` holds all the parameters a notebook runs with (papermill injects
them). It is rewritten only when they change, so ``make`` reruns a notebook only when its
parameters changed; nothing is written when any parameter is refused. The defaults read from the
notebooks are cached in ``<build>/params/defaults.json`` by the content hash of the notebook and
of the settings.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml

from symtele.study.results import write_text
from symtele.study.settings import plain

RESERVED = {"build_dir": "BUILD=<dir>", "quick": "QUICK=1", "output_dir": "nothing: the build stages outputs there"}
TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "tuple": list, "dict": dict}


class ParameterError(ValueError):
    """A parameter the build refuses; the message names it."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+.0123456789")
)


def type_name(value) -> str:
    """The type name of a default value, or ``"any"`` for a type the checks do not know (or None).

    Args:
        value: the default.

    Returns:
        The name.
    """
    name = type(value).__name__
    return name if name in TYPES else "any"


def _run_cell(tree: ast.Module, stem: str, quick: bool) -> dict:
    """The namespace the parameters cell leaves, with its ``quick = ...`` read as ``quick``."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "quick" for t in node.targets):
            node.value = ast.copy_location(ast.Constant(quick), node.value)
    namespace: dict = {}
    try:
        exec(compile(tree, f"{stem} parameters", "exec"), namespace)
    except Exception as error:
        raise ParameterError(f"notebook {stem}: its parameters cell fails ({type(error).__name__}: {error})") from None
    return namespace


def inspect_defaults(path: Path) -> dict:
    """A notebook's parameters: ``{"parameters": {name: {"default", "quick", "type"}}, "settings": [class]}``.

    Every top-level ``name = value`` of the ``parameters`` cell is a parameter, except the names that
    hold a settings object (the cell's ``settings = CONVEX.quick() if quick else CONVEX``). The cell
    is run twice, as written and with ``quick = True``, to learn the defaults of both builds.
    (``papermill.inspect_notebook`` silently skips a line whose comment holds an ``=``, so it cannot be
    trusted to list them all.)

    Args:
        path: the notebook's path.

    Returns:
        The parameters and the names of the settings classes the cell uses.

    Raises:
        ParameterError: no cell tagged ``parameters``, or one that does not parse or run.
    """
    import nbformat

    from symtele.study.settings import Settings

    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ParameterError(f"notebook {path.stem}: no cell tagged 'parameters'")
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError as error:
        raise ParameterError(f"notebook {path.stem}: cannot parse its parameters cell ({error})") from None
    names = [
        node.targets[0].id
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    ]
    full, quick = _run_cell(tree, path.stem, False), _run_cell(tree, path.stem, True)
    settings = sorted({type(v).__name__ for v in full.values() if isinstance(v, Settings)})
    parameters = {
        name: {"default": plain(full[name]), "quick": plain(quick[name]), "type": type_name(full[name])}
        for name in names
        if not isinstance(full[name], Settings)
    }
    return {"parameters": parameters, "settings": settings}


def _settings_digest() -> str:
    """A digest of the writeup's settings, which the parameters cells read their defaults from."""
    import importlib.util

    origin = importlib.util.find_spec("symtele.study.settings").origin
    return hashlib.sha256(Path(origin).read_bytes()).hexdigest()


def load_defaults(notebook_dir: Path, stems: list[str], cache: Path) -> dict:
    """Every notebook's :func:`inspect_defaults`, re-inspecting only the notebooks (or settings) that changed.

    Args:
        notebook_dir: the notebooks' folder.
        stems: the notebooks' names.
        cache: the JSON file of earlier inspections (rewritten when it changes).

    Returns:
        ``{stem: entry}``.

    Raises:
        ParameterError: a parameters cell that cannot be inspected, or that misses a reserved name.
    """
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    result, changed = {}, False
    settings = _settings_digest()
    for stem in stems:
        path = notebook_dir / f"{stem}.ipynb"
        digest = hashlib.sha256(path.read_bytes() + settings.encode()).hexdigest()
        entry = cached.get(stem)
        if entry is None or entry.get("sha256") != digest:
            entry, changed = {"sha256": digest, **inspect_defaults(path)}, True
        missing = [name for name in RESERVED if name not in entry["parameters"]]
        if missing:
            raise ParameterError(f"notebook {stem}: its parameters cell must define {', '.join(missing)}")
        result[stem] = entry
    if changed or set(cached) != set(result):
        write_if_changed(cache, result)
    return result


def coerce(label: str, value, spec: dict, text: str | None = None):
    """``value`` checked against the type of the default in ``spec``.

    Args:
        label: the assignment, for the message.
        value: the value given.
        spec: the parameter's ``default``, ``quick`` and ``type``.
        text: the value's raw form from PARAMS (a string parameter takes it as written), or ``None``.

    Returns:
        The value (a float parameter's as a float, tuples as lists).

    Raises:
        ParameterError: a value of another type than the default's.
    """
    kind = spec["type"]
    if kind == "str" and text is not None and not isinstance(value, str):
        value = text  # a string parameter takes the text as written
    if kind in ("list", "tuple") and isinstance(value, tuple):
        value = list(value)
    expected = TYPES.get(kind)
    ok = (
        expected is None
        or (kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind == "int" and isinstance(value, int) and not isinstance(value, bool))
        or (kind not in ("int", "float") and isinstance(value, expected))
    )
    if not ok:
        raise ParameterError(
            f"parameter {label}: expected {'a list' if kind == 'tuple' else kind} (the default is "
            f"{spec['default']!r}), got {type(value).__name__} {text if text is not None else value!r}"
        )
    return float(value) if kind == "float" else plain(value)


def parse_value(label: str, text: str):
    """``text`` read as a Python literal (``(1, 2)``, ``1e-4``) if it is one, else as YAML (a bare word: a string).

    Args:
        label: the assignment, for the message.
        text: the value as written.

    Returns:
        The value (blank text as it is).

    Raises:
        ParameterError: text that is neither.
    """
    if not text.strip():
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ParameterError(f"parameter {label}: cannot read the value {text!r} ({error})") from None


def targets(label: str, stem: str | None, name: str, notebooks: dict) -> list[str]:
    """The notebooks an assignment applies to.

    Args:
        label: the assignment, for the message.
        stem: the notebook named, or ``None`` for every notebook that has the parameter.
        name: the parameter.
        notebooks: every notebook's parameters (:func:`load_defaults`).

    Returns:
        The notebooks' names.

    Raises:
        ParameterError: a parameter the build sets, an unknown notebook, or a parameter no notebook named has.
    """
    if name in RESERVED:
        raise ParameterError(f"parameter {label}: '{name}' is set by the build; use {RESERVED[name]}")
    if stem is not None:
        if stem not in notebooks:
            raise ParameterError(
                f"parameter {label}: no notebook '{stem}' (notebooks: {', '.join(notebooks) or 'none'})"
            )
        if name not in notebooks[stem]["parameters"]:
            known = ", ".join(n for n in notebooks[stem]["parameters"] if n not in RESERVED)
            raise ParameterError(f"parameter {label}: notebook {stem} has no parameter '{name}' (it has: {known})")
        return [stem]
    found = [s for s, entry in notebooks.items() if name in entry["parameters"]]
    if not found:
        raise ParameterError(f"parameter {label}: no notebook has a parameter '{name}'")
    return found


def parse_assignments(params: str, notebooks: dict) -> dict:
    """``{stem: {name: value}}`` from a PARAMS string such as ``"02_relu_posscale.epochs=500 seeds=[0,1]"``.

    Args:
        params: the PARAMS string.
        notebooks: every notebook's parameters (:func:`load_defaults`).

    Returns:
        The values, checked, by notebook and name.

    Raises:
        ParameterError: an item that is not ``[notebook.]name=value``; what :func:`targets`, :func:`parse_value`
            and :func:`coerce` raise.
    """
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
        for target in targets(label, stem if dot else None, name, notebooks):
            spec = notebooks[target]["parameters"][name]
            overrides.setdefault(target, {})[name] = coerce(label, parse_value(label, text), spec, text)
    return overrides


def parse_file(path: Path, notebooks: dict) -> dict:
    """``{stem: {name: value}}`` from a YAML file mapping notebook stems to their parameters.

    Args:
        path: the file.
        notebooks: every notebook's parameters (:func:`load_defaults`).

    Returns:
        The values, checked, by notebook and name.

    Raises:
        ParameterError: no such file, invalid YAML, another shape; what :func:`targets` and :func:`coerce`
            raise.
    """
    if not path.is_file():
        raise ParameterError(f"PARAMS_FILE={path}: no such file")
    try:
        content = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as error:
        raise ParameterError(f"PARAMS_FILE={path}: not valid YAML ({error})") from None
    if not isinstance(content, dict) or not all(isinstance(v, dict) for v in content.values()):
        raise ParameterError(f"PARAMS_FILE={path}: expected a mapping of notebook -> {{parameter: value}}")
    overrides: dict = {}
    for stem, values in content.items():
        for name, value in values.items():
            label = f"{stem}.{name} (in {path})"
            targets(label, str(stem), str(name), notebooks)
            overrides.setdefault(stem, {})[name] = coerce(label, value, notebooks[stem]["parameters"][name])
    return overrides


def parse_quick(text: str) -> bool:
    """``QUICK``'s value as a flag.

    Args:
        text: ``""`` or ``"0"`` (the full build), ``"1"`` (the smoke build).

    Returns:
        Whether the build is the smoke build.

    Raises:
        ParameterError: another value.
    """
    if text not in ("", "0", "1"):
        raise ParameterError(f"QUICK={text!r}: expected 1 (quick smoke build) or 0")
    return text == "1"


def check_values(stem: str, entry: dict, values: dict, typed: dict) -> None:
    """Run the checks of every settings object the notebook uses on its parameters.

    Args:
        stem: the notebook's name.
        entry: its :func:`inspect_defaults` entry.
        values: every parameter's value.
        typed: the values the user gave, named in the message.

    Raises:
        ParameterError: what a settings check refused, naming the value.
    """
    from symtele.study import settings as writeup

    for cls_name in entry["settings"]:
        try:
            getattr(writeup, cls_name)().with_parameters(values)
        except (TypeError, ValueError) as error:
            typed_here = ", ".join(f"{stem}.{k}={v!r}" for k, v in typed.items()) or "the defaults"
            raise ParameterError(f"notebook {stem}: {error} (with {typed_here})") from None


def as_text(content) -> str:
    """``content`` as the JSON of a stamp.

    Keys keep their order: a dict parameter's order is meaningful (``lrs`` lists the optimisers in the order
    they run).

    Args:
        content: JSON-ready data.

    Returns:
        The JSON text, with a final newline.
    """
    return json.dumps(content, indent=1) + "\n"


def write_if_changed(path: Path, content) -> bool:
    """Write ``content`` as JSON unless the file already holds exactly that.

    Args:
        path: the file.
        content: JSON-ready data.

    Returns:
        True when written.
    """
    text = as_text(content)
    if path.exists() and path.read_text() == text:
        return False
    write_text(path, text)
    return True


def resolve(
    notebook_dir: Path, build: Path, stems: list[str], quick: str, params: str = "", params_file: str = ""
) -> dict:
    """Check every parameter of every notebook, then write the stamps.

    Args:
        notebook_dir: the notebooks' folder.
        build: the build folder (the stamps go to ``<build>/params``).
        stems: the notebooks' names.
        quick: ``QUICK``'s value.
        params: ``PARAMS``'s value.
        params_file: ``PARAMS_FILE``'s value (``""``: none).

    Returns:
        ``{stem: parameters}``, as stamped.

    Raises:
        ParameterError: any parameter refused (no stamp is written then).
    """
    quick_flag = parse_quick(quick)
    notebooks = load_defaults(notebook_dir, stems, build / "params" / "defaults.json")
    overrides = parse_assignments(params, notebooks)
    if params_file:
        for stem, values in parse_file(Path(params_file), notebooks).items():
            overrides.setdefault(stem, {}).update(values)
    build_dir = os.path.relpath(build.resolve(), notebook_dir.resolve())
    resolved = {}
    for stem in stems:
        entry = notebooks[stem]
        values = {
            name: spec["quick" if quick_flag else "default"]
            for name, spec in entry["parameters"].items()
            if name not in RESERVED
        }
        values.update(overrides.get(stem, {}))
        check_values(stem, entry, values, overrides.get(stem, {}))
        resolved[stem] = {"build_dir": build_dir, "quick": quick_flag, **values}
    for stem, values in resolved.items():  # written only once every notebook's parameters passed
        write_if_changed(build / "params" / f"{stem}.json", values)
    return resolved


def main(argv=None) -> int:
    """Resolve and stamp the parameters of the notebooks named on the command line.

    Args:
        argv: the command line's arguments; by default ``sys.argv[1:]``.

    Returns:
        The exit status: 0, or 2 when a parameter is refused (the message goes to standard error).
    """
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
