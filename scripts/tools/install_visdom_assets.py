#!/usr/bin/env python
"""Install the visdom server's web assets from the npm registry.

At start, `python -m visdom.server` (0.2.4) fetches its JavaScript, CSS, fonts and a MathJax subset from
unpkg, cdn.plot.ly, d3js.org and cdnjs. On a machine that reaches only package registries this fails:
the page stays blank, and the unguarded MathJax download ends the server with a ConnectionError.
This script installs the same files, from the same package versions, out of npm tarballs and writes
`static/version.built`, the marker visdom compares with its own version to skip the download.

    python -m scripts.tools.install_visdom_assets            # install into the installed visdom package
    python -m scripts.tools.install_visdom_assets --check    # exit 1 when something is missing
    python -m scripts.tools.install_visdom_assets --tarball-dir DIR   # use `npm pack` tarballs, no network

Each tarball is checked against the sha512 published in the registry metadata and pinned below.
"""
import argparse
import base64
import hashlib
import io
import json
import logging
import os
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as `python scripts/tools/install_visdom_assets.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from util.run.atomic import atomic_write_bytes

log = logging.getLogger("install_visdom_assets")

DEFAULT_REGISTRY = "https://registry.npmjs.org"
MANIFEST_NAME = ".offline_assets.json"

# visdom 0.2.4's index.html links the user stylesheet with static_url("../user/style.css"). Tornado 6.6
# made static_url raise HTTP 403 for paths outside the static folder, so every page (/, /env/<name>)
# renders as an empty 403. The replacement yields the URL older Tornado produced (<prefix>../user/style.css,
# which the browser resolves to /user/style.css, served by visdom's UserSettingsHandler), minus the hash.
_USER_CSS_OLD = 'static_url("../user/style.css")'
_USER_CSS_NEW = 'handler.settings.get("static_url_prefix", "/static/") + "../user/style.css"'


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # sha512 from the registry at the time the list was made; a change means a new file

    @property
    def tarball_name(self):
        return f"{self.name}-{self.version}.tgz"


# Versions are the ones in visdom 0.2.4's own URLs (visdom/server/build.py): unpkg `name@version`,
# cdn.plot.ly/plotly-2.11.1 (= plotly.js-dist-min), d3js.org d3.v3 (= d3 3.5.17, the last v3) and
# d3-selection-multi.v1 (= 1.0.1, the last v1), cdnjs mathjax/2.7.5.
PACKAGES = {p.name: p for p in (
    NpmPackage("jquery", "3.1.1", "sha512-zuiWRmx65Kd1oFGdWLvAjbsumdOBFvs3r1vuqCyKFF79R7exBHNbiNEJ8LR+xkzgfxqBznMD/4Cv6PHXS6mvEw=="),
    NpmPackage("bootstrap", "3.3.7", "sha512-qcFaisBrcBhTFkz1IUnGDYnX6ZWfFzH8zOixUDtHW9Ip+r+7MfMFav2rzy7cIHc7rgIg7xjhWBoo1mS/U26j4g=="),
    NpmPackage("react", "16.2.0", "sha512-ZmIomM7EE1DvPEnSFAHZn9Vs9zJl5A9H7el0EGTE6ZbW9FKe/14IYAlPbC8iH25YarEQxZL+E8VW7Mi7kfQrDQ=="),
    NpmPackage("react-dom", "16.2.0", "sha512-zpGAdwHVn9K0091d+hr+R0qrjoJ84cIBFL2uU60KvWBPfZ7LPSrfqviTxGHWN0sjPZb2hxWzMexwrvJdKePvjg=="),
    NpmPackage("react-modal", "3.1.10", "sha512-7b77AGWCkdg0YOf/qcYIGCpuwbxRwOA8P3UrUovk4grUNv+idOmHovJAx/Dcd3fuwHtgixxVjpcjVG60985MSA=="),
    NpmPackage("plotly.js-dist-min", "2.11.1", "sha512-F9WWNht0D3yBLZGHbLoJNfvplXvy+GUPSsA/lCbMuYd/UwzSu6Vmyprxlps9Einw1LDS1hYBrJeioK0lE3ieXA=="),
    NpmPackage("sjcl", "1.0.7", "sha512-xQbiwKfiAj6vyk44ANJ5RRymALRdRZOuRoKNYkWUU404p/RFXmMaay1Z5vRn30GJjkD+psox4Jd38jZojSuNYA=="),
    NpmPackage("layout-bin-packer", "1.4.0", "sha512-dQOZnajbOBGIcS9YlzKrkRtMCGa2oEpyf1zGRn93suphSvPclJe54Sbgtb053GJ21DUk84IBzaeQvjn+Gb10fA=="),
    NpmPackage("d3", "3.5.17", "sha512-yFk/2idb8OHPKkbAL8QaOaqENNoMhIaSHZerk3oQsECwkObkCpJyjYwCe+OHiq6UEdhe1m8ZGARRRO3ljFjlKg=="),
    NpmPackage("d3-selection-multi", "1.0.1", "sha512-mEnRkJ6A+Otd1LuRPV3az+s/RLDmIEhuz/MnT21O2nPcWNH7wZotdIlRjMA4Wpr+n7AESQ5fD8v1J3nL2Mnw9g=="),
    NpmPackage("save-svg-as-png", "1.4.17", "sha512-7QDaqJsVhdFPwviCxkgHiGm9omeaMBe1VKbHySWU6oFB2LtnGCcYS13eVoslUgq6VZC6Tjq/HddBd1K6p2PGpA=="),
    NpmPackage("react-resizable", "1.4.6", "sha512-4zLORO51u0/mlDsrVCAA4p266d+3mb2ZMNdiWOotAh/PdnfrRzZhgePmKE08PSQatXVIfMjmyD+Sapay8tmxdQ=="),
    NpmPackage("react-grid-layout", "0.16.3", "sha512-ytP92EqUjqcFhGzvdeKrK610dQ04GdFwRCWtD6PoeL5wR3liETcFISO7k8RBqnosV86JtXf/DwIfrL0COLs0gg=="),
    NpmPackage("classnames", "2.2.5", "sha512-DTt3GhOUDKhh4ONwIJW4lmhyotQmV2LjNlGK/J2hkwUcqcbKkCLAdJPtxQnxnlc7SR3f1CEXCyMmc7WLUsWbNA=="),
    NpmPackage("mathjax", "2.7.5", "sha512-OzsJNitEHAJB3y4IIlPCAvS0yoXwYjlo2Y4kmm9KQzyIBZt2d8yKRalby3uTRNN4fZQiGL2iMXjpdP1u2Rq2DQ=="),
)}

_GLYPH = "glyphicons-halflings-regular"
# (package, file inside the tarball's package/ folder, target under visdom's static/ folder).
# Targets follow build.py: the sub-folder comes from the name's ending (.js/.js.map -> js, .css -> css,
# anything else -> fonts, which is why `classnames` lands in fonts/).
ASSETS = (
    ("jquery", "dist/jquery.min.js", "js/jquery.min.js"),
    ("bootstrap", "dist/js/bootstrap.min.js", "js/bootstrap.min.js"),
    ("react", "umd/react.production.min.js", "js/react-react.min.js"),
    ("react-dom", "umd/react-dom.production.min.js", "js/react-dom.min.js"),
    ("react-modal", "dist/react-modal.min.js", "js/react-modal.min.js"),
    ("plotly.js-dist-min", "plotly.min.js", "js/plotly-plotly.min.js"),
    ("sjcl", "sjcl.js", "js/sjcl.js"),
    ("layout-bin-packer", "dist/layout-bin-packer.js.map", "js/layout-bin-packer.js.map"),
    ("layout-bin-packer", "dist/layout-bin-packer.js", "js/layout_bin_packer.js"),
    ("d3", "d3.min.js", "js/d3.v3.min.js"),
    ("d3-selection-multi", "build/d3-selection-multi.js", "js/d3-selection-multi.v1.js"),
    ("save-svg-as-png", "lib/saveSvgAsPng.js", "js/saveSvgAsPng.js"),
    ("react-resizable", "css/styles.css", "css/react-resizable-styles.css"),
    ("react-grid-layout", "css/styles.css", "css/react-grid-layout-styles.css"),
    ("bootstrap", "dist/css/bootstrap.min.css", "css/bootstrap.min.css"),
    ("classnames", "index.js", "fonts/classnames"),
    ("bootstrap", f"dist/fonts/{_GLYPH}.eot", f"fonts/{_GLYPH}.eot"),
    ("bootstrap", f"dist/fonts/{_GLYPH}.woff2", f"fonts/{_GLYPH}.woff2"),
    ("bootstrap", f"dist/fonts/{_GLYPH}.woff", f"fonts/{_GLYPH}.woff"),
    ("bootstrap", f"dist/fonts/{_GLYPH}.ttf", f"fonts/{_GLYPH}.ttf"),
    # build.py saves the svg font under a name with the URL fragment in it (that is what it checks for);
    # browsers drop the fragment when they request it, so the plain name is installed as well.
    ("bootstrap", f"dist/fonts/{_GLYPH}.svg", f"fonts/{_GLYPH}.svg#glyphicons_halflingsregular"),
    ("bootstrap", f"dist/fonts/{_GLYPH}.svg", f"fonts/{_GLYPH}.svg"),
) + tuple(
    # The MathJax subset build.py fetches from cdnjs 2.7.5 into static/js/mathjax/2.7.5/.
    ("mathjax", path, f"js/mathjax/2.7.5/{path}") for path in (
        "MathJax.js",
        "config/Safe.js",
        "config/TeX-AMS-MML_HTMLorMML.js",
        "extensions/Safe.js",
        "jax/output/SVG/fonts/TeX/fontdata.js",
        "jax/output/SVG/jax.js",
        "jax/output/SVG/fonts/TeX/Size1/Regular/Main.js",
        "jax/output/SVG/config.js",
    )
)


def visdom_static_dir():
    """The `static/` folder of the installed visdom package (the only place its server reads)."""
    import importlib.util
    spec = importlib.util.find_spec("visdom")
    if spec is None or spec.origin is None:
        raise RuntimeError("visdom is not installed in this Python environment; "
                           "install it first (pip install visdom==0.2.4) or pass --static-dir")
    return Path(spec.origin).parent / "static"


def visdom_version(static_dir):
    """The version string visdom writes into version.built (its VERSION file next to static/)."""
    version_file = Path(static_dir).parent / "VERSION"
    if not version_file.is_file():
        return "no_version_file"  # what visdom itself uses then; it skips the download in that case
    return version_file.read_text().strip()


def _spec_digest():
    """Identifies the asset list, so a changed list reinstalls even when every file exists."""
    spec = [[p.name, p.version, p.integrity] for p in PACKAGES.values()] + [list(a) for a in ASSETS]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()


def missing_assets(static_dir):
    """Targets that are absent or empty, plus the marker files when they do not match."""
    static_dir = Path(static_dir)
    missing = [target for _, _, target in ASSETS
               if not (static_dir / target).is_file() or (static_dir / target).stat().st_size == 0]
    built = static_dir / "version.built"
    if not built.is_file() or built.read_text().strip() != visdom_version(static_dir):
        missing.append("version.built")
    if _USER_CSS_OLD in _read_index(static_dir):
        missing.append("index.html (Tornado 6.6 fix)")
    manifest = static_dir / MANIFEST_NAME
    try:
        if json.loads(manifest.read_text()).get("spec") != _spec_digest():
            missing.append(MANIFEST_NAME)
    except (OSError, ValueError):
        missing.append(MANIFEST_NAME)
    return missing


def _read_index(static_dir):
    index = Path(static_dir) / "index.html"
    return index.read_text(encoding="utf-8") if index.is_file() else ""


def patch_index_template(static_dir):
    """Apply the Tornado 6.6 fix to visdom's index.html; returns True when the file changed."""
    text = _read_index(static_dir)
    if _USER_CSS_OLD not in text:
        return False
    atomic_write_bytes(str(Path(static_dir) / "index.html"), text.replace(_USER_CSS_OLD, _USER_CSS_NEW).encode("utf-8"))
    return True


def _check_integrity(data, integrity, source):
    algo, _, expected = integrity.partition("-")
    if algo not in ("sha512", "sha384", "sha256", "sha1"):
        raise RuntimeError(f"{source}: unsupported integrity algorithm {algo!r}")
    actual = base64.b64encode(hashlib.new(algo, data).digest()).decode()
    if actual != expected:
        raise RuntimeError(f"{source}: {algo} of the tarball does not match {integrity}; the download is "
                           "corrupt or not the published file. Delete it / retry, or check your registry mirror.")


def _fetch(url, timeout):
    request = urllib.request.Request(url, headers={"Accept": "application/json, */*"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def fetch_tarball(package, registry, timeout=60.0):
    """Download one package tarball via the registry's metadata and verify it."""
    meta_url = f"{registry.rstrip('/')}/{package.name}/{package.version}"
    try:
        meta = json.loads(_fetch(meta_url, timeout))
        dist = meta["dist"]
        tarball_url = dist["tarball"]
        data = _fetch(tarball_url, timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(
            f"could not download {package.name}@{package.version} from {registry} ({exc}). Check the network "
            "or pass --registry <mirror>; on a machine without any registry, run `npm pack "
            f"{package.name}@{package.version}` elsewhere and pass the folder with --tarball-dir.") from exc
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"unexpected registry metadata at {meta_url}: {exc!r}") from exc
    if "integrity" in dist:
        _check_integrity(data, dist["integrity"], tarball_url)
    elif "shasum" in dist:
        if hashlib.sha1(data).hexdigest() != dist["shasum"]:
            raise RuntimeError(f"{tarball_url}: sha1 does not match the registry's shasum {dist['shasum']}")
    else:
        raise RuntimeError(f"{meta_url} publishes no integrity or shasum; refusing an unverified tarball")
    # The pin catches a registry (or mirror) that serves a different file under the same version.
    _check_integrity(data, package.integrity, f"{tarball_url} (pinned hash)")
    return data


def load_tarball(package, tarball_dir):
    path = Path(tarball_dir) / package.tarball_name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; create it with `npm pack {package.name}@{package.version}` "
                                f"in {tarball_dir}")
    data = path.read_bytes()
    _check_integrity(data, package.integrity, str(path))
    return data


def install(static_dir, registry=DEFAULT_REGISTRY, tarball_dir=None, force=False, timeout=60.0):
    """Install every asset into `static_dir`; returns the number of files written (0 when up to date)."""
    static_dir = Path(static_dir)
    if not force and not missing_assets(static_dir):
        log.info("visdom assets already installed in %s", static_dir)
        return 0
    if not os.access(static_dir if static_dir.exists() else static_dir.parent, os.W_OK):
        raise RuntimeError(f"{static_dir} is not writable; run this with the permissions of the Python "
                           "environment that holds visdom (e.g. the project's .venv)")
    # A changed asset list or --force refetches everything; otherwise only packages with a missing file.
    manifest_ok = MANIFEST_NAME not in missing_assets(static_dir)
    written = 0
    for name, package in PACKAGES.items():
        members = [(member, target) for pkg, member, target in ASSETS if pkg == name]
        if manifest_ok and not force and all((static_dir / target).is_file() and (static_dir / target).stat().st_size
                                             for _, target in members):
            continue
        log.info("%s@%s -> %d file(s)", name, package.version, len(members))
        data = load_tarball(package, tarball_dir) if tarball_dir else fetch_tarball(package, registry, timeout)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            # npm tarballs keep files under one top folder, usually `package/`; read, never extract, so
            # no path in the archive can write outside static/.
            by_name = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile() and "/" in m.name}
            for member, target in members:
                if member not in by_name:
                    raise RuntimeError(f"{package.tarball_name} has no file {member!r}; the asset list in "
                                       f"{__file__} does not match this package version")
                atomic_write_bytes(str(static_dir / target), tar.extractfile(by_name[member]).read())
                written += 1
    if patch_index_template(static_dir):
        log.info("patched index.html for Tornado >= 6.6 (user stylesheet link)")
    manifest = {"spec": _spec_digest(), "packages": {p.name: p.version for p in PACKAGES.values()}}
    atomic_write_bytes(str(static_dir / MANIFEST_NAME), json.dumps(manifest, indent=1).encode())
    # Written last: visdom skips its download only when this matches its version.
    atomic_write_bytes(str(static_dir / "version.built"), visdom_version(static_dir).encode())
    log.info("installed %d files into %s", written, static_dir)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--static-dir", default=None,
                        help="visdom's static folder (default: the one of the installed visdom package)")
    parser.add_argument("--registry", default=os.environ.get("npm_config_registry", DEFAULT_REGISTRY),
                        help="npm registry URL (default: $npm_config_registry or %(default)s)")
    parser.add_argument("--tarball-dir", default=None,
                        help="folder of `npm pack` tarballs (<name>-<version>.tgz) to use instead of the network")
    parser.add_argument("--force", action="store_true", help="reinstall even when everything is present")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 when assets are missing")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    static_dir = Path(args.static_dir) if args.static_dir else visdom_static_dir()
    if args.check:
        missing = missing_assets(static_dir)
        if missing:
            log.info("missing in %s: %s", static_dir, ", ".join(missing))
            return 1
        log.info("all visdom assets present in %s", static_dir)
        return 0
    try:
        install(static_dir, registry=args.registry, tarball_dir=args.tarball_dir, force=args.force,
                timeout=args.timeout)
    except (RuntimeError, FileNotFoundError) as exc:
        log.error("error: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
