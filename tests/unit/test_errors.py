"""The error tree (domain/errors.py): every exception class vault defines is in it with an exit
code, the drawing in its docstring is the tree as the code has it, and the CLI's handler says
each category with its words and its exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from types import ModuleType

import pytest

from adapters.errors import AdapterError
from domain import errors
from domain.errors import DomainError, VaultError
from vault.cli import main as cli_main

PACKAGES = ("domain", "adapters", "vault")
# raised and caught inside one module, never reaching the CLI (the docstring names them)
PRIVATE = {"adapters.mail._Refused", "adapters.mail._Unexpected"}
TAGS = {"domain": DomainError, "adapter": AdapterError}
CATEGORIES = (errors.OperationFailed, errors.BadInput, errors.CannotUnlock, errors.NotFound,
              errors.IntegrityViolation)


def _modules() -> Iterator[ModuleType]:
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not info.name.endswith(".__main__"):  # it runs the CLI
                yield importlib.import_module(info.name)


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for module in _modules():
        for value in vars(module).values():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == module.__name__):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def _tree() -> list[type[VaultError]]:
    _defined_exceptions()  # every module imported: each subclass is known
    seen: list[type[VaultError]] = [VaultError]
    for cls in seen:
        seen += [sub for sub in cls.__subclasses__() if sub not in seen]
    return seen


def _drawing() -> list[tuple[int, str, str]]:
    """(depth, class name, the rest of its line) for each line of the drawn tree."""
    lines = errors.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("VaultError "))
    drawn = []
    for line in lines[start:]:
        if not line.strip():
            break
        found = re.match(r"^([│├└─ ]*)([A-Za-z_]\w*)(.*)$", line)
        assert found and len(found.group(1)) % 4 == 0, f"not a line of the tree: {line!r}"
        drawn.append((len(found.group(1)) // 4, found.group(2), found.group(3)))
    return drawn


def test_every_exception_vault_defines_is_in_the_tree_with_an_exit_code() -> None:
    tree, defined = _tree(), _defined_exceptions()
    for name, cls in defined.items():
        assert name in PRIVATE or cls in tree, f"{name} is not under VaultError (domain/errors.py)"
    assert not PRIVATE - set(defined), "PRIVATE names a class that no longer exists"
    for cls in tree:
        assert cls.__module__.split(".")[0] in PACKAGES, cls
        assert isinstance(cls.exit_code, int) and 1 <= cls.exit_code <= 5, cls
        assert isinstance(cls.prefix, str) and cls.prefix, cls


def test_a_class_is_under_one_category_and_its_origin_never_decides_its_exit_code() -> None:
    for cls in _tree():
        categories = [c for c in CATEGORIES if issubclass(cls, c)]
        if cls in (VaultError, *TAGS.values()):
            assert not categories, cls
            continue
        assert len(categories) == 1, f"{cls.__name__} is under {categories}"
        assert cls.exit_code == categories[0].__dict__["exit_code"], cls
    assert [c.exit_code for c in CATEGORIES] == [1, 2, 3, 4, 5]


def test_the_docstring_draws_the_tree_as_it_is() -> None:
    tree = {cls.__name__: cls for cls in _tree()}
    assert len(tree) == len(_tree()), "two classes of the tree share a name"
    drawn = _drawing()
    names = [name for _, name, _ in drawn]
    assert len(names) == len(set(names)), "a class is drawn twice"
    assert set(names) == set(tree), (f"not drawn: {sorted(set(tree) - set(names))}; "
                                     f"drawn but gone: {sorted(set(names) - set(tree))}")
    parents: list[str] = []
    for depth, name, rest in drawn:
        cls = tree[name]
        del parents[depth:]
        assert len(parents) == depth, f"{name} is drawn below nothing"
        if depth:
            assert cls.__bases__[0].__name__ == parents[-1], f"{name} is drawn under {parents[-1]}"
        parents.append(name)
        words = rest.split()
        code = re.search(r"\bexit (\d)\b", rest)
        if "exit_code" in vars(cls):
            assert code and int(code.group(1)) == cls.exit_code, f"{name}: exit {cls.exit_code}"
        else:
            assert code is None, f"{name} sets no exit code of its own"
        for word, tag in TAGS.items():
            assert (word in words) == (tag in cls.__bases__[1:]), f"{name}: mark {word!r}"
        if "prefix" in vars(cls):
            assert f'"vault: {cls.prefix}: <message>"' in rest, f"{name}: its prefix"
        where = [w for w in words if w.endswith(".py")]
        module = cls.__module__.replace(".", "/") + ".py"
        assert where == ([] if module == "domain/errors.py" else [module]), f"{name}: {module}"


@pytest.mark.parametrize("cls", [VaultError, *CATEGORIES, *TAGS.values()],
                         ids=lambda cls: cls.__name__)
def test_the_cli_says_each_category_with_its_words_and_exit_code(
        cls: type[VaultError], capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main.report_error(cls("something\nwent\x1b[31m wrong"))  # no store to blame
    words = "integrity violation" if cls is errors.IntegrityViolation else "error"
    assert (code, capsys.readouterr().err) == (
        cls.exit_code, f"vault: {words}: something went\\x1b[31m wrong\n")
