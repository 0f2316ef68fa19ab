"""Is this kernel still the one the tests expect? A probe the grader runs after every test cell.

The grader loads this file afresh from disk (``runpy.run_path``) and calls
:func:`report` in the student's kernel after each graded test cell. It lists
what student code has rebound: functions of ``course_utils``, ``torch`` and
``builtins`` replaced by code defined elsewhere (a notebook cell, ``exec``),
IPython hooks that could hide or rewrite test results, and a trace function.
A test cell followed by a non-empty report scores zero.

This catches ordinary monkey-patching. It is not proof against a student who
forges code objects or patches the interpreter in native code; that is why
accuracy checks are scored outside the kernel (see autograde/README.md).
"""
from __future__ import annotations

import ast
import builtins
import inspect
import json
import sys
import sysconfig
import types
from pathlib import Path

# Namespaces whose functions the tests call or rely on (training, autograd, layers, comparisons).
TORCH_MODULES = ("torch", "torch.nn.functional", "torch.nn.init", "torch.autograd", "torch.linalg",
                 "torch.nn", "torch.optim", "torch.utils.data", "torch.export")
COURSE_MODULES = ("course_utils.grading", "course_utils.data", "course_utils.training", "course_utils.modes")
SHELL_METHODS = ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "showtraceback", "showsyntaxerror",
                 "_showtraceback", "user_expressions", "transform_cell", "ex", "ev")


def _trusted_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.add(str(Path(__file__).resolve().parent))
    roots |= {p for p in sys.path if p.endswith("site-packages")}
    return tuple(sorted(str(Path(r).resolve()) for r in roots))


def _code_of(obj) -> types.CodeType | None:
    """The Python code behind ``obj`` (functions, methods, partials, wrapped callables), if any."""
    for _ in range(5):
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        elif isinstance(obj, types.MethodType):
            obj = obj.__func__
        elif isinstance(obj, types.FunctionType):
            return obj.__code__
        elif hasattr(obj, "func") and callable(getattr(obj, "func", None)):  # functools.partial
            obj = obj.func
        elif not isinstance(obj, type) and isinstance(getattr(type(obj), "__call__", None), types.FunctionType):
            obj = type(obj).__call__  # an object of a class with a __call__ method written in Python
        else:
            return None
    return None


def _foreign(obj, roots: tuple[str, ...]) -> str | None:
    """Where ``obj``'s code comes from, if that is outside the installed packages and the standard library."""
    code = _code_of(obj)
    if code is None:
        return None
    filename = code.co_filename
    if filename.startswith("<frozen") or filename.startswith(roots):
        return None
    return filename


def _generated(cls: type, attr: str, obj) -> bool:
    """Methods that dataclasses and namedtuples write with ``exec`` (their code says ``<string>``)."""
    code = _code_of(obj)
    return (code is not None and code.co_filename == "<string>" and attr.startswith("__")
            and (hasattr(cls, "__dataclass_fields__") or hasattr(cls, "_fields")))


def _scan(namespace: dict, where: str, roots: tuple[str, ...], problems: list[str], seen: set[int]) -> None:
    for name, obj in list(namespace.items()):
        origin = _foreign(obj, roots)
        if origin is not None:
            problems.append(f"{where}.{name} was replaced by code from {origin}")
        elif isinstance(obj, type) and where.startswith("torch") and id(obj) not in seen:
            seen.add(id(obj))
            if not (obj.__module__ or "").startswith(("torch", "builtins", "typing", "collections", "enum")):
                problems.append(f"{where}.{name} was replaced by the class {obj.__module__}.{obj.__qualname__}")
                continue
            for attr, member in list(vars(obj).items()):
                origin = _foreign(member, roots)
                if origin is not None and not _generated(obj, attr, member):
                    problems.append(f"{where}.{name}.{attr} was replaced by code from {origin}")


def _defined_functions(path: str) -> list[str]:
    """The names of the functions a module's file defines at its top level (``def``), read from the file."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _course_problems(roots: tuple[str, ...], problems: list[str]) -> None:
    for modname in COURSE_MODULES:
        module = sys.modules.get(modname)
        if module is None:
            continue
        expected = str(Path(__file__).resolve().parent / (modname.rsplit(".", 1)[1] + ".py"))
        if str(Path(getattr(module, "__file__", "") or "").resolve()) != expected:
            problems.append(f"sys.modules[{modname!r}] is not the module in {expected}")
            continue
        replaced = set()  # each name once: where its new code came from, when that is known
        for name, obj in list(vars(module).items()):
            if _code_of(obj) is None:
                continue
            origin = _foreign(obj, roots)
            inner = _code_of(inspect.unwrap(obj)) if callable(obj) else None
            if origin is None and getattr(obj, "__module__", None) == modname and inner is not None:
                origin = inner.co_filename if inner.co_filename != expected else None
            if origin is not None:
                problems.append(f"{modname}.{name} was replaced by code from {origin}")
                replaced.add(name)
        for name in [n for n in _defined_functions(expected) if n not in replaced]:  # still its file's function
            inner = inspect.unwrap(vars(module).get(name))
            code = getattr(inner, "__code__", None) if isinstance(inner, types.FunctionType) else None
            if code is None or code.co_name != name or str(Path(code.co_filename).resolve()) != expected:
                problems.append(f"{modname}.{name} is no longer the function {expected} defines")


def _shell():
    """The running IPython shell, if any. Not ``builtins.get_ipython``: IPython puts that in only while a cell
    runs, and the grader asks for this report between cells (``user_expressions``)."""
    module = sys.modules.get("IPython.core.interactiveshell")
    cls = getattr(module, "InteractiveShell", None)
    return cls.instance() if cls is not None and cls.initialized() else None


def _own_method(shell, name: str, value) -> bool:
    """``value`` is the shell class's own method bound to ``shell`` (ipykernel puts one back this way)."""
    return (isinstance(value, types.MethodType) and value.__self__ is shell
            and value.__func__ is getattr(type(shell), name, None))


def _shell_problems(roots: tuple[str, ...], problems: list[str]) -> None:
    shell = _shell()
    if shell is None:
        return
    for name in SHELL_METHODS:
        if name in vars(shell) and not _own_method(shell, name, vars(shell)[name]):
            problems.append(f"IPython's {name} was replaced on the shell object")
        origin = _foreign(getattr(type(shell), name, None), roots)
        if origin is not None:
            problems.append(f"IPython's {name} was replaced by code from {origin}")
    for kind in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
        for hook in getattr(shell, kind, []) or []:
            origin = _foreign(hook, roots) or _foreign(getattr(hook, "visit", None), roots)
            if origin is not None:
                problems.append(f"an IPython {kind} hook from {origin} rewrites cells")
    if getattr(shell, "custom_exceptions", ()):
        problems.append("an IPython custom exception handler hides errors")
    for event, callbacks in getattr(getattr(shell, "events", None), "callbacks", {}).items():
        for callback in callbacks:
            origin = _foreign(callback, roots)
            if origin is not None:
                problems.append(f"an IPython {event} callback from {origin} runs around every cell")


def problems() -> list[str]:
    """Everything found rebound in this process, one sentence each (empty when nothing is)."""
    roots = _trusted_roots()
    found: list[str] = []
    _course_problems(roots, found)
    seen: set[int] = set()
    for modname in TORCH_MODULES:
        module = sys.modules.get(modname)
        if module is not None:
            _scan(vars(module), modname, roots, found, seen)
    for modname, cls_name in (("torch.nn", "Module"), ("torch.optim", "Optimizer")):
        module = sys.modules.get(modname)
        if module is not None:
            seen.discard(id(getattr(module, cls_name)))
            _scan({cls_name: getattr(module, cls_name)}, modname, roots, found, seen)
    _scan(vars(builtins), "builtins", roots, found, seen)
    _shell_problems(roots, found)
    if sys.gettrace() is not None and _foreign(sys.gettrace(), roots):
        found.append("a trace function (sys.settrace) from a notebook watches every line")
    return sorted(set(found))


def report(nonce: str) -> str:
    """``nonce`` followed by :func:`problems` as JSON: what the grader reads back from the kernel."""
    return nonce + json.dumps(problems())
