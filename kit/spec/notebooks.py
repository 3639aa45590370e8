"""Reading step notebooks: the `parameters` cell and its annotated defaults.

The parameters cell is parsed with `ast`, not executed, so a manifest can be checked
against every notebook before any kernel starts.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.errors import InvalidInput

# IPython line magics that automagic turns an annotated assignment into (FIELD-NOTES).
_MAGIC_NAMES = frozenset(
    "alias alias_magic autoawait autocall automagic bookmark cd clear colors conda config "
    "connect_info copy ddir debug dhist dirs doctest_mode ed edit env gui hist history "
    "killbgscripts ldir less load load_ext loadpy logoff logon logstart logstate logstop ls "
    "lsmagic macro magic man matplotlib mkdir more mv notebook page pastebin pdb pdef pdoc "
    "pfile pinfo pinfo2 pip popd pprint precision prun psearch psource pushd pwd pycat pylab "
    "qtconsole quickref recall rehashx reload_ext rep rerun reset reset_selective rm rmdir run "
    "save sc set_env store sx system tb time timeit unalias unload_ext who who_ls whos xdel xmode".split()
)


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str | None  # the annotation's source text, e.g. "str", "float | None"
    default: Any  # the literal default, or None when it is not a literal
    line: int


@dataclass
class NotebookInfo:
    path: Path
    parameters: dict[str, Parameter]
    warnings: list[str]


def _cell_source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def parameters_cell_index(nb: Any) -> int | None:
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def inspect_notebook(path: Path) -> NotebookInfo:
    """The parameters a notebook declares; refuses a notebook without a parameters cell."""
    with open(path, "rb") as fh:  # a raw JSON read is much cheaper than nbformat's validation
        try:
            nb = json.load(fh)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{path}: not a readable notebook: {exc}") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        found = "a JSON object without a list of cells" if isinstance(nb, dict) else f"a JSON {type(nb).__name__}"
        raise InvalidInput(f"{path}: not a notebook: expected a JSON object with a list of cells, found {found}")
    if not all(isinstance(cell, dict) for cell in nb["cells"]):
        raise InvalidInput(f"{path}: not a notebook: every cell must be a JSON object")
    index = parameters_cell_index(nb)
    if index is None:
        raise InvalidInput(
            f"{path}: no cell tagged 'parameters': tag the cell holding the step's defaults "
            "(in Jupyter: View > Cell Toolbar > Tags, or the property inspector)"
        )
    source = _cell_source(nb["cells"][index])
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidInput(f"{path}: parameters cell, line {exc.lineno}: not valid Python: {exc.msg}") from None
    params: dict[str, Parameter] = {}
    warnings: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, annotation = node.target.id, ast.get_source_segment(source, node.annotation)
            value_node = node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value_node = node.targets[0].id, None, node.value
        else:
            continue
        try:
            default = ast.literal_eval(value_node) if value_node is not None else None
        except ValueError:
            default = None
        if annotation is not None and name in _MAGIC_NAMES:
            warnings.append(
                f"{path}: parameter {name!r} is also an IPython magic: an annotated assignment "
                f"of it is swallowed by automagic; rename it or drop the annotation"
            )
        params[name] = Parameter(name, annotation, default, node.lineno)
    return NotebookInfo(path=path, parameters=params, warnings=warnings)
