"""Every command-line parser of the project refuses abbreviations: `--crop 64` is never silently taken as
--crop_size, in train.py, test.py and every script."""
import ast
import os

from conftest import ROOT


def parser_calls():
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("checkpoints", "results", "datasets_cache")]
        for name in names:
            if not name.endswith(".py"):
                continue
            path = os.path.join(folder, name)
            tree = ast.parse(open(path).read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                        "ArgumentParser":
                    yield os.path.relpath(path, ROOT), node


def test_every_argument_parser_refuses_abbreviations():
    calls = list(parser_calls())
    assert len(calls) > 20  # the scan sees the scripts
    loose = [f"{path}:{node.lineno}" for path, node in calls
             if not any(k.arg == "allow_abbrev" and isinstance(k.value, ast.Constant) and k.value.value is False
                        for k in node.keywords)]
    assert not loose, f"parsers that take abbreviations: {loose}"
