"""Execute the project's notebooks: ``python -m benchmarks.notebooks NOTEBOOK... [-p NAME VALUE]``.

::

    python -m benchmarks.notebooks notebooks/*.ipynb                  # run, keep the outputs in place
    python -m benchmarks.notebooks notebooks/compare_backends.ipynb -p EPISODES 20 -o /tmp/out.ipynb

Parameters work as in papermill: the notebook's cell tagged ``parameters``
holds the defaults, and a cell injected right after it (tagged
``injected-parameters``) overrides them, so the run records what it was
given. A parameter the ``parameters`` cell does not set (a misspelt ``-p
EPISODS 2``) is refused before anything runs (papermill only warns, and the
notebook then runs with its defaults). Execution uses nbclient with the ``python3`` kernel, which ipykernel
provides for the interpreter running this command (no ``jupyter kernelspec
install`` needed on a fresh clone), in the repository root so relative
paths resolve as on the command line. (papermill does the same and more, but
pulls in a dozen dependencies for these twenty lines.)
"""

from __future__ import annotations

import argparse
import ast
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.arguments import refuse_unwritable
from browser_env.atomic import write_text_atomic

__all__ = ["declared_parameters", "execute", "inject_parameters", "main"]

ROOT = Path(__file__).resolve().parents[1]


def declared_parameters(notebook: Any) -> list[str]:
    """The names the notebook's (first) cell tagged ``parameters`` assigns at its
    top level, in order: the parameters it takes. Raises ValueError without such
    a cell."""
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    if not tagged:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = tagged[0].source
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax (a %magic): the names that begin lines
        return list(
            dict.fromkeys(re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=(?!=)", source, re.M))
        )
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
    return names


def inject_parameters(notebook: Any, parameters: Mapping[str, Any]) -> None:
    """Insert a cell assigning ``parameters`` after the ``parameters`` cell
    (replacing an earlier injected one). Raises ValueError without such a cell,
    or naming the parameters that cell does not set (:func:`declared_parameters`)."""
    import nbformat

    cells = [c for c in notebook.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    if not tagged:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    declared = declared_parameters(notebook)
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        raise ValueError(
            f"no parameter {', '.join(unknown)}: the notebook's parameters cell sets "
            f"{', '.join(declared) or 'none'}"
        )
    if parameters:
        source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = ["injected-parameters"]
        cells.insert(tagged[0] + 1, cell)
    notebook.cells = cells


def execute(
    path: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    timeout: int = 1800,
    cwd: str | os.PathLike[str] = ROOT,
) -> Any:
    """Run the notebook at ``path`` top to bottom and write it, with its
    outputs, to ``output`` (default: in place). Returns the executed notebook;
    a failing cell raises ``nbclient.exceptions.CellExecutionError``."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    inject_parameters(notebook, dict(parameters or {}))
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    # atomic, its directory made: a crash mid-write leaves the notebook as it was
    write_text_atomic(output or path, nbformat.writes(notebook))
    return notebook


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word is a string, as in papermill's -p


def _refuse_undeclared(
    parser: argparse.ArgumentParser, notebooks: Sequence[Path], parameters: Mapping[str, Any]
) -> None:
    """``parser.error`` for the first of ``notebooks`` that ``parameters`` do not
    fit (:func:`inject_parameters`' refusal), before any notebook runs."""
    import nbformat

    for path in notebooks:
        try:
            inject_parameters(nbformat.read(path, as_version=4), parameters)
        except ValueError as exc:  # also a file that is no notebook (nbformat's errors are)
            parser.error(f"{path}: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.notebooks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="where to write the executed notebook (one notebook only)"
    )
    args = parser.parse_args(argv)
    if args.output and len(args.notebooks) > 1:
        parser.error("--output takes one notebook")
    missing = [str(path) for path in args.notebooks if not path.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    refuse_unwritable(parser, args.output, "--output")
    parameters = {name: _value(value) for name, value in args.parameter}
    _refuse_undeclared(parser, args.notebooks, parameters)
    for notebook in args.notebooks:
        execute(notebook, parameters, output=args.output)
        print(f"executed {notebook} -> {args.output or notebook}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
