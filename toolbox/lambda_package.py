"""Build the messaging-stream Lambda's zip: its handler plus the backend_flask modules it imports.

The zip holds the real package files (backend_flask/__init__.py builds
nothing), only those the handler reaches through its imports.

boto3 and botocore come from the Lambda runtime. Any other import outside the
standard library is refused, so the function never drags in Flask or psycopg.
The zip is reproducible (sorted entries, fixed timestamps): the same sources
give the same bytes, so `aws cloudformation package` uploads only real changes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_DIR = ROOT / "aws" / "lambdas" / "messaging_stream"
PACKAGE = "backend_flask"
DEFAULT_OUT = ROOT / "dist"
ZIP_NAME = "messaging-stream.zip"
RUNTIME_PROVIDED = {"boto3", "botocore"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


class PackageError(Exception):
    """The handler imports something the Lambda zip cannot carry."""


def _imports(path: Path) -> set[str]:
    """Return every absolute module name a file imports (lazily imported ones included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise PackageError(f"{path}: relative imports are not packaged")
            names.add(node.module or "")
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(name: str, source: Path) -> list[Path]:
    """Return the files of backend_flask an import needs (module, package __init__s); [] for stdlib/runtime."""
    parts = name.split(".")
    if parts[0] in sys.stdlib_module_names or parts[0] in RUNTIME_PROVIDED or parts[0] == "__future__":
        return []
    if parts[0] != PACKAGE:
        raise PackageError(f"{source.relative_to(ROOT)} imports {name}, which the Lambda runtime does not have")
    if len(parts) > 1 and parts[1] != "lib":
        raise PackageError(f"{source.relative_to(ROOT)} imports {name}: the Lambda may only use backend_flask.lib")
    files = []
    path = ROOT
    for depth, part in enumerate(parts):
        package, module = path / part, path / f"{part}.py"
        if (package / "__init__.py").is_file():
            files.append(package / "__init__.py")
            path = package
        elif module.is_file():
            files.append(module)
            break
        elif depth >= 3:
            break  # an attribute of a module already found, e.g. backend_flask.lib.errors.NotFound
        else:
            raise PackageError(f"{source.relative_to(ROOT)} imports {name}, which is not a module of {PACKAGE}")
    return files


def contents() -> dict[str, Path]:
    """Return the zip's entries: archive name -> source file (the real package, no stub)."""
    entries: dict[str, Path] = {"handler.py": FUNCTION_DIR / "handler.py"}
    todo = [FUNCTION_DIR / "handler.py"]
    while todo:
        source = todo.pop()
        for name in sorted(_imports(source)):
            for file in _files(name, source):
                arcname = file.relative_to(ROOT).as_posix()
                if arcname not in entries:
                    entries[arcname] = file
                    todo.append(file)
    return entries


def build(out_dir: Path = DEFAULT_OUT) -> Path:
    """Write out_dir/messaging-stream.zip and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / ZIP_NAME
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for arcname, source in sorted(contents().items()):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """bin/lambda/package: build the stream Lambda's deployable zip."""
    parser = argparse.ArgumentParser(prog="bin/lambda/package", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: dist/)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        target = build(args.out)
    except PackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with zipfile.ZipFile(target) as archive:
        for name in archive.namelist():
            print(f"  {name}")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"{target} ({target.stat().st_size} bytes, sha256 {digest[:16]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
