"""Plugins by file name: `models/<name>_model.py` holds `<Name>Model`, `data/<name>_dataset.py` `<Name>Dataset`."""
import importlib
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def available_names(package, suffix):
    """Names of the plugins in `package` (e.g. 'models', '_model'), from the files on disk."""
    folder = os.path.join(REPO_ROOT, package)
    names = []
    for filename in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(filename)
        if ext == ".py" and stem.endswith(suffix) and stem not in ("template" + suffix, "base" + suffix):
            names.append(stem[: -len(suffix)])
    return names


def find_class(package, name, suffix, base):
    """Import `<package>/<name><suffix>.py` and return its subclass of `base` named like the file."""
    choices = available_names(package, suffix)
    if name not in choices and name != "template":
        kind = suffix.strip("_")
        raise ValueError(f"unknown {kind} '{name}'; available: {', '.join(choices)} "
                         f"(a {kind} named X lives in {package}/X{suffix}.py)")
    module = importlib.import_module(f"{package}.{name}{suffix}")
    wanted = (name + suffix).replace("_", "").lower()
    for attr, obj in vars(module).items():
        if attr.lower() == wanted and isinstance(obj, type) and issubclass(obj, base):
            return obj
    raise ValueError(f"{package}/{name}{suffix}.py has no class {wanted!r} (case-insensitive) "
                     f"that subclasses {base.__name__}")
