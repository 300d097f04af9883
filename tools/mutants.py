"""Mutation testing of the core modules: do the tests fail when the code is wrong?

    python tools/mutants.py                                  # every core module
    python tools/mutants.py ewc_dqn/dqn.py envs/scores.py    # some of them
    python tools/mutants.py ewc_dqn/replay.py --jobs 2 --json mutants.json

Each mutant is one small change to one module, made on its syntax tree:

- comparison swaps (``<`` to ``<=``, ``==`` to ``!=``, ``in`` to ``not in``, ...);
- arithmetic and bitwise operator swaps (``+`` to ``-``, ``*`` to ``/``, ``&`` to ``|``, ...),
  in expressions and in augmented assignments;
- ``and`` to ``or`` and back; a ``not``, a unary minus or a ``~`` removed;
- number tweaks (``0`` to ``1``, an int ``n`` to ``n + 1``, a float ``x`` to ``2x``) and
  ``True`` to ``False`` and back (strings are left alone: they are messages);
- negated conditions of ``if``, ``while`` and conditional expressions;
- dropped statements (a call, an augmented assignment, a ``raise``, an assignment to an
  attribute or an item, or one that rebinds a name) and ``return x`` made ``return None``.

A mutant is written into a scratch copy of the repository (the working tree is never touched)
and the module's mapped test files (``TESTS``: the fast ones that exercise it, not the whole
suite) run against it with ``pytest -x`` in a forked child of this process, which has already
imported torch, numpy and pytest, so a mutant costs its tests and not a fresh interpreter. A
child that fails or errors has *killed* its mutant; one that passes lets it *survive*; one that
runs past ``--timeout-factor`` times the clean run (and at least ``--min-timeout`` seconds) is
stopped and counted as a *timeout* (an infinite loop is a detected change). The score is
(killed + timeouts) / mutants.

Before the mutants, each module's tests run once against the module as the tool rewrites it
without a change (``ast.unparse`` drops comments and formatting): that run must pass, and its
time sets the timeout. Linux only (``os.fork``).
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS: dict[str, tuple[str, ...]] = {
    "ewc_dqn/dqn.py": ("tests/test_dqn.py", "tests/test_agent.py"),
    "ewc_dqn/agent.py": (
        "tests/test_agent.py",
        "tests/test_networks.py",
        "tests/test_dqn.py",
        "tests/test_rehearsal.py",
    ),
    "ewc_dqn/rehearsal.py": ("tests/test_rehearsal.py",),
    "ewc_dqn/replay.py": ("tests/test_replay.py",),
    "ewc_dqn/chunk_store.py": (
        "tests/test_checkpoint.py",
        "tests/test_replay.py",
        "tests/test_ewc.py",
    ),
    "ewc_dqn/ewc.py": ("tests/test_ewc.py",),
    "ewc_dqn/ewc_maths.py": ("tests/test_ewc.py",),
    "ewc_dqn/fisher.py": ("tests/test_fisher.py",),
    "ewc_dqn/fmn.py": ("tests/test_fmn.py",),
    "ewc_dqn/fmn_maths.py": ("tests/test_fmn.py",),
    "ewc_dqn/fmn_frames.py": ("tests/test_fmn.py",),
    "ewc_dqn/fmn_config.py": ("tests/test_fmn.py", "tests/test_config.py"),
    "ewc_dqn/evaluation.py": ("tests/test_paper_total.py", "tests/test_evaluation.py"),
    "envs/scores.py": ("tests/test_scores.py", "tests/test_paper_total.py"),
}
"""Core module -> the test files run against its mutants (fast ones; no end-to-end runs)."""

_COMPARE_SWAP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
_BINOP_SWAP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
    ast.Pow: ast.Mult,
    ast.LShift: ast.RShift,
    ast.RShift: ast.LShift,
    ast.BitOr: ast.BitAnd,
    ast.BitAnd: ast.BitOr,
    ast.BitXor: ast.BitOr,
}
_SYMBOL = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
    ast.And: "and",
    ast.Or: "or",
}


@dataclass(frozen=True)
class Mutant:
    """One change to one module: where, what, and the whole mutated source."""

    module: str
    line: int
    col: int
    description: str
    source: str

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}:{self.col}"


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, timeout
    seconds: float


# ------------------------------------------------------------------------------ making mutants


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, @overload stubs, TYPE_CHECKING and
    ``__main__`` blocks."""
    skip: set[int] = set()

    def skip_all(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            skip_all(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if any(_name_of(d) == "overload" for d in node.decorator_list):
                skip_all(node)
            skip_all(node.returns)
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs]:
                skip_all(arg.annotation)
            for arg in (node.args.vararg, node.args.kwarg):
                skip_all(arg.annotation if arg else None)
        if isinstance(node, ast.AnnAssign):
            skip_all(node.annotation)
        if isinstance(node, ast.If) and (
            _name_of(node.test) == "TYPE_CHECKING" or "__main__" in ast.unparse(node.test)
        ):
            skip_all(node)
    return skip


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(stmt.value, ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _bound_before(func: ast.AST, name: str, line: int) -> bool:
    """Whether ``name`` is a parameter of ``func`` or assigned in it before ``line``."""
    if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = func.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        if any(a is not None and a.arg == name for a in params):
            return True
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == name:
            if node.lineno < line:
                return True
    return False


def _droppable(stmt: ast.stmt, scope: ast.AST) -> str | None:
    """A description when dropping ``stmt`` makes a mutant worth running, else None."""
    if isinstance(stmt, ast.Expr) and not _is_docstring(stmt):
        if isinstance(stmt.value, ast.Constant):
            return None  # `...`
        return "dropped call"
    if isinstance(stmt, ast.AugAssign):
        return "dropped augmented assignment"
    if isinstance(stmt, ast.Raise):
        return "dropped raise"
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
            return None
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        for target in targets:
            if isinstance(target, (ast.Attribute, ast.Subscript)):
                return "dropped assignment"
            if isinstance(target, ast.Name) and _bound_before(scope, target.id, stmt.lineno):
                return "dropped reassignment"
    return None


def _numbers(value: object) -> object | None:
    """The tweaked value of a number constant (None: leave it)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return 1 if value == 0 else value + 1
    if isinstance(value, float):
        return 1.0 if value == 0.0 else value * 2.0
    return None


def _edits(tree: ast.Module) -> Iterator[tuple[int, int, int, str, object]]:
    """(node index in ast.walk order, line, col, description, edit argument) of every mutant."""
    skip = _skipped_nodes(tree)
    # A statement's scope is its innermost function (or the module): walk order visits outer
    # functions first, so inner ones overwrite.
    scopes: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                if child is not node:
                    scopes[id(child)] = node

    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in _COMPARE_SWAP:
                    new = _COMPARE_SWAP[type(op)]
                    yield index, line, col, f"{_SYMBOL[type(op)]} -> {_SYMBOL[new]}", ("cmp", k)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINOP_SWAP:
            new = _BINOP_SWAP[type(node.op)]
            yield index, line, col, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", ("op", None)
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield index, line, col, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", ("bool", None)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.Invert)):
            sym = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}[type(node.op)]
            yield index, line, col, f"removed unary {sym}", ("unary", None)
        elif isinstance(node, ast.Constant) and _numbers(node.value) is not None:
            new_value = _numbers(node.value)
            yield index, line, col, f"{node.value!r} -> {new_value!r}", ("const", new_value)
        if isinstance(node, (ast.If, ast.While, ast.IfExp)):
            yield (
                index,
                line,
                col,
                f"negated {type(node).__name__.lower()} condition",
                ("not", None),
            )
        if isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                yield index, line, col, "return None", ("return", None)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list):
                continue
            for k, stmt in enumerate(body):
                if id(stmt) in skip or not isinstance(stmt, ast.stmt):
                    continue
                what = _droppable(stmt, scopes.get(id(stmt), tree))
                if what:
                    yield index, stmt.lineno, stmt.col_offset, what, ("drop", (field, k))


def _apply(node: ast.AST, kind: str, arg: object) -> None:
    if kind == "cmp":
        node.ops[arg] = _COMPARE_SWAP[type(node.ops[arg])]()
    elif kind == "op":
        node.op = _BINOP_SWAP[type(node.op)]()
    elif kind == "bool":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "const":
        node.value = arg
    elif kind == "not":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "return":
        node.value = ast.Constant(value=None)
    elif kind == "drop":
        field, k = arg
        getattr(node, field)[k] = ast.Pass()
    else:
        raise ValueError(kind)


class _DropUnary(ast.NodeTransformer):
    """Replaces the marked UnaryOp by its operand."""

    def __init__(self, target: ast.AST) -> None:
        self.target = target

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if node is self.target:
            return node.operand
        return self.generic_visit(node)


def make_mutants(module: str, text: str) -> list[Mutant]:
    """Every mutant of ``module`` (a path relative to the repository root) with source ``text``."""
    original = ast.parse(text)
    clean = ast.unparse(original)
    seen = {clean}
    mutants = []
    for index, line, col, description, (kind, arg) in _edits(original):
        tree = copy.deepcopy(original)
        node = list(ast.walk(tree))[index]
        if kind == "unary":
            tree = _DropUnary(node).visit(tree)
        else:
            _apply(node, kind, arg)
        source = ast.unparse(ast.fix_missing_locations(tree))
        if source in seen:
            continue  # the same program as the original or as an earlier mutant
        seen.add(source)
        mutants.append(Mutant(module, line, col, description, source))
    return sorted(mutants, key=lambda m: (m.line, m.col))


# ------------------------------------------------------------------------------ running mutants


def scratch_copy() -> Path:
    """A copy of the repository's sources and tests in a temporary folder."""
    scratch = Path(tempfile.mkdtemp(prefix="ewc-dqn-mutants-"))
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "runs", "results", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".mypy_cache", ".hypothesis", "*.egg-info", "mutants*.json",
    )  # fmt: skip
    for item in ROOT.iterdir():
        if ignore(str(ROOT), [item.name]):
            continue
        if item.is_dir():
            shutil.copytree(item, scratch / item.name, ignore=ignore)
        else:
            shutil.copy2(item, scratch / item.name)
    return scratch


def _start(scratch: Path, module: str, source: str, tests: tuple[str, ...], log: Path) -> int:
    """Write ``source`` as ``module`` in ``scratch`` and fork a child running ``tests``."""
    (scratch / module).write_text(source)
    pid = os.fork()
    if pid:
        return pid
    try:  # the child: never returns
        os.setpgid(0, 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(scratch)
        sys.path.insert(0, str(scratch))
        import pytest

        code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests])
        os._exit(int(code))
    except BaseException:
        os._exit(99)


def _stop(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)


def run_module(
    module: str, jobs: int, timeout_factor: float, min_timeout: float, log_dir: Path
) -> list[Outcome]:
    """Every mutant of ``module`` against its mapped tests; prints one line per survivor."""
    tests = TESTS[module]
    missing = [t for t in tests if not (ROOT / t).is_file()]
    if missing:
        raise SystemExit(f"{module}: mapped test files missing: {missing}")
    text = (ROOT / module).read_text()
    mutants = make_mutants(module, text)
    scratches = [scratch_copy() for _ in range(jobs)]
    try:
        t0 = time.perf_counter()
        pid = _start(scratches[0], module, ast.unparse(ast.parse(text)), tests, log_dir / "clean")
        _, status = os.waitpid(pid, 0)
        clean_seconds = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{module}: its tests fail without a mutant; see {log_dir / 'clean'}")
        timeout = max(min_timeout, timeout_factor * clean_seconds)
        print(
            f"{module}: {len(mutants)} mutants, tests {' '.join(tests)} "
            f"({clean_seconds:.1f} s clean, timeout {timeout:.0f} s)",
            flush=True,
        )
        outcomes: list[Outcome] = []
        todo = list(mutants)
        running: dict[int, tuple[Mutant, float, Path]] = {}
        free = list(scratches)
        while todo or running:
            while todo and free:
                mutant, scratch = todo.pop(0), free.pop()
                log = log_dir / f"{len(outcomes) + len(running)}.log"
                running[_start(scratch, module, mutant.source, tests, log)] = (
                    mutant,
                    time.perf_counter(),
                    scratch,
                )
            time.sleep(0.02)
            for pid, (mutant, started, scratch) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                elapsed = time.perf_counter() - started
                if done:
                    result = "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
                elif elapsed > timeout:
                    _stop(pid)
                    result = "timeout"
                else:
                    continue
                del running[pid]
                free.append(scratch)
                outcomes.append(Outcome(mutant, result, elapsed))
                if result == "survived":
                    print(f"  survived {mutant.where} {mutant.description}", flush=True)
        return outcomes
    finally:
        for scratch in scratches:
            shutil.rmtree(scratch, ignore_errors=True)


def _table(results: dict[str, list[Outcome]]) -> str:
    rows = [
        "| module | mutants | killed | timeouts | survived | score |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    totals = [0, 0, 0, 0]
    for module, outcomes in results.items():
        counts = [
            len(outcomes),
            sum(o.status == "killed" for o in outcomes),
            sum(o.status == "timeout" for o in outcomes),
            sum(o.status == "survived" for o in outcomes),
        ]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        rows.append(_row(module, counts))
    if len(results) > 1:
        rows.append(_row("all", totals))
    return "\n".join(rows)


def _row(name: str, counts: list[int]) -> str:
    n, killed, timeouts, survived = counts
    score = (killed + timeouts) / n if n else float("nan")
    return f"| {name} | {n} | {killed} | {timeouts} | {survived} | {score:.1%} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"default: {' '.join(TESTS)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    parser.add_argument("--timeout-factor", type=float, default=4.0)
    parser.add_argument("--min-timeout", type=float, default=20.0, help="seconds")
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    args = parser.parse_args(argv)
    modules = args.modules or list(TESTS)
    unknown = [m for m in modules if m not in TESTS]
    if unknown:
        parser.error(f"no mapped tests for {unknown}; core modules: {' '.join(TESTS)}")
    if args.list:
        for module in modules:
            for m in make_mutants(module, (ROOT / module).read_text()):
                print(f"{m.where} {m.description}")
        return 0

    # Heavy third-party imports happen once, here; the project's own modules must not be
    # imported in this process, or every child would test the parent's unmutated copy.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.dont_write_bytecode = True
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch

    torch.set_num_threads(1)
    for heavy in ("pandas", "hypothesis", "scipy.special", "sklearn.metrics", "rliable.library"):
        try:
            __import__(heavy)
        except ImportError:
            pass
    assert not any(m.split(".")[0] in ("ewc_dqn", "envs") for m in sys.modules)

    results: dict[str, list[Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="ewc-dqn-mutant-logs-") as logs:
        for module in modules:
            results[module] = run_module(
                module, args.jobs, args.timeout_factor, args.min_timeout, Path(logs)
            )
    print()
    print(_table(results))
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {**asdict(o.mutant), "source": None, "status": o.status, "seconds": o.seconds}
                    for outcomes in results.values()
                    for o in outcomes
                ],
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
