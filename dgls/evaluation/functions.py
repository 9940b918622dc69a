"""Do infilled functions pass their own tests? The measure users (and reviewers) care about.

For each function in `function_tasks.py` (or any file with `test_<name>` functions beside the
functions they test), the body after the docstring is removed and the cursor put on the empty,
indented line where it was, as a user asking for a body would. The infill comes from the language
server's pipeline (`dgls.pipeline`, so the span planner, post-processing and syntax repair count)
and, for comparison, from the raw engine and from the empty insert. The infilled file then runs
that function's test in a fresh interpreter with a time limit.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

TASKS_FILE = Path(__file__).with_name("function_tasks.py")
TEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FunctionTask:
    """A file with one function body cut out: the cursor sits at the end of `prefix`."""

    name: str
    prefix: str
    body: str
    suffix: str


def function_tasks(source: str) -> list[FunctionTask]:
    """One task per top-level function that has a `test_<name>` in the same source."""
    tree = ast.parse(source)
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    lines = source.splitlines(keepends=True)
    tasks = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef) or f"test_{node.name}" not in names:
            continue
        body = node.body
        has_doc = ast.get_docstring(node, clean=False) is not None
        if has_doc and len(body) == 1:
            continue  # nothing to cut
        first = body[1] if has_doc else body[0]
        start, end = first.lineno - 1, node.end_lineno  # 0-based first body line, exclusive end
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        prefix = "".join(lines[:start]) + indent
        suffix = "\n" + "".join(lines[end:])
        body_text = "".join(lines[start:end])[len(indent):].rstrip("\n")
        tasks.append(FunctionTask(node.name, prefix, body_text, suffix))
    return tasks


def passes(file_text: str, test_name: str, timeout: float = TEST_TIMEOUT_S) -> bool:
    """Run `test_name` from the file in a fresh interpreter; True when it returns normally."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "infilled.py"
        path.write_text(file_text, encoding="utf-8")
        code = f"import runpy; runpy.run_path({str(path)!r})[{test_name!r}]()"
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, timeout=timeout,
                                  cwd=tmp, env=env)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0


def server_infill(engine, task: FunctionTask) -> str:
    """The whole file after the language server's edit for a cursor at the task's spot."""
    from dgls.pipeline import infilled_file

    return infilled_file(engine, task.prefix, task.suffix)


def run_function_eval(engine, source: str | None = None, seed: int = 0, log=print) -> dict:
    """Pass counts per method over every task in `source` (default: function_tasks.py)."""
    from dgls.engine import InfillRequest

    from .sets import Item, similarity

    tasks = function_tasks(source if source is not None else TASKS_FILE.read_text(encoding="utf-8"))
    rows: dict[str, list[str]] = {"reference": [], "empty": [], "model": [], "dgls": []}
    sims: dict[str, float] = {m: 0.0 for m in rows}
    for task in tasks:
        test = f"test_{task.name}"
        files = {"reference": task.prefix + task.body + task.suffix, "empty": task.prefix + task.suffix}
        if engine is not None:
            res = engine.infill(InfillRequest(prefix=task.prefix, suffix=task.suffix,
                                              max_tokens=engine.max_span_tokens, seed=seed))
            files["model"] = task.prefix + res.text + task.suffix
            files["dgls"] = server_infill(engine, task)
        answer = Item("function-body", "", task.prefix, task.body, task.suffix)
        for method, text in files.items():
            if passes(text, test):
                rows[method].append(task.name)
            if text.startswith(task.prefix) and text.endswith(task.suffix):  # else the edit reached past the body
                sims[method] += similarity(text[len(task.prefix): len(text) - len(task.suffix)], answer)
        log(f"  {task.name}: " + ", ".join(f"{m} {'pass' if task.name in rows[m] else 'fail'}" for m in files))
    methods = [m for m in rows if engine is not None or m in ("reference", "empty")]
    n = len(tasks)
    return {"n": n, "passed": {m: len(rows[m]) for m in methods},
            "similarity": {m: round(sims[m] / max(1, n), 1) for m in methods},
            "passing": {m: rows[m] for m in methods if rows[m]}}
