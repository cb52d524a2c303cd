"""spendgate's request path compiled with mypyc, for measuring (docs/benchmarks.md,
"Compiled with mypyc (branch `mypyc`)").

    python -m benchmarks.mypyc_build          # build the C extensions beside the .py files
    python -m benchmarks.mypyc_build --clean  # remove them

mypyc ships inside mypy (a dev dependency). The extensions are built in place, one ``.so``
beside each module plus one shared library (``src/spendgate__mypyc*.so``); Python imports an
extension before the ``.py`` of the same name, so an editable install (`make setup`) runs
them at once (and `python -m benchmarks.compare --baseline` runs another tree, interpreted,
beside them). Nothing built here is committed (.gitignore).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PACKAGE = SRC / "spendgate"

# The request path, as the profile (`python -m benchmarks.profile`) ranks it.
COMPILED = (
    "money.py",
    "clock.py",
    "pipeline",
    "domain",
    "dialects",
    "upstream",
    "events",
    "storage",
    "storage/sqlite",
    "api",
    "services",
    "gateway.py",
)
# Left interpreted, with the reason (what mypyc rejects or gets wrong).
SKIPPED = {
    # an async generator (`chunks`): mypyc cannot compile it
    "upstream/client.py",
    # an attribute named `_thread` becomes the C keyword `__thread`; OpenTelemetry is off the
    # default path anyway
    "events/otel.py",
    # a native subclass of collections.abc.Sequence shares Sequence's ABC registry, so an
    # interpreted `isinstance(some_tuple, BudgetList)` says True
    "domain/budget_list.py",
    # `continue` inside try/finally (a `with`): unimplemented; the spool is off the request path
    "storage/spool.py",
    # `@runtime_checkable` protocols: a compiled protocol is no longer a protocol class
    "storage/base.py",
    # aiohttp's `@web.middleware` sets an attribute on the function: a compiled one has none
    "api/errors.py",
    # a native class cannot subclass aiohttp's RequestHandler (it has __slots__)
    "api/connections.py",
    # a mixin whose class body declares properties under `if TYPE_CHECKING:`
    "services/views.py",
}


def sources() -> list[str]:
    files: list[Path] = []
    for name in COMPILED:
        path = PACKAGE / name
        files.extend(sorted(path.glob("*.py")) if path.is_dir() else [path])
    skipped = {PACKAGE / name for name in SKIPPED}
    return [str(f.relative_to(ROOT)) for f in files if f not in skipped]


def built() -> list[Path]:
    """The extensions in the tree (each suffix ends in ``.so``: one file may match several)."""
    found = {
        path
        for suffix in EXTENSION_SUFFIXES
        for path in [*PACKAGE.rglob(f"*{suffix}"), *SRC.glob(f"*__mypyc{suffix}")]
    }
    return sorted(found)


def clean() -> None:
    for path in built():
        path.unlink()
    shutil.rmtree(ROOT / "build", ignore_errors=True)


def build(jobs: int) -> None:
    from mypyc.build import mypycify  # mypy's, installed by `make setup`
    from setuptools import Distribution

    clean()  # a module dropped from the list must not leave a stale extension behind
    extensions = mypycify(sources(), opt_level="3", multi_file=True, group_name="spendgate")
    # setuptools' Distribution, not setup(): setup() would validate pyproject.toml
    dist = Distribution({"name": "spendgate-compiled", "package_dir": {"": "src"}})
    dist.ext_modules = extensions
    command = dist.get_command_obj("build_ext")
    command.inplace = True  # type: ignore[attr-defined]
    command.parallel = jobs  # type: ignore[attr-defined]
    dist.run_command("build_ext")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--jobs", type=int, default=2, help="C compilers run at once")
    args = parser.parse_args()
    if args.clean:
        clean()
        return
    os.chdir(ROOT)  # mypy reads its options (pyproject.toml) from here
    build(args.jobs)
    print(f"{len(built()) - 1} modules compiled", file=sys.stderr)


if __name__ == "__main__":
    main()
