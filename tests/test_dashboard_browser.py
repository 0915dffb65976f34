"""The live dashboard for real: offline visdom assets, a visdom server, a short training run, headless Chromium.

The browser test reads the rendered page (window titles, the image grid's <img>, plotly's svg traces),
not only the server's answers. It is skipped only when no Chromium is installed.
"""
import base64
import hashlib
import importlib
import io
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request

import pytest

from conftest import run_cli

pytestmark = pytest.mark.timeout(240)

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def load_assets_script():
    return importlib.import_module("scripts.tools.install_visdom_assets")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------- assets


def fake_registry(tmp_path, assets):
    """`npm pack`-style tarballs holding every file the asset list needs, and their sha512 integrity."""
    packages = {}
    for name, package in assets.PACKAGES.items():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for pkg, member, _ in assets.ASSETS:
                if pkg == name:
                    data = f"/* {name} {member} */\n".encode()
                    info = tarfile.TarInfo(f"package/{member}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        blob = buffer.getvalue()
        (tmp_path / package.tarball_name).write_bytes(blob)
        integrity = "sha512-" + base64.b64encode(hashlib.sha512(blob).digest()).decode()
        packages[name] = assets.NpmPackage(name, package.version, integrity)
    return packages


def fake_visdom_package(tmp_path):
    static = tmp_path / "visdom" / "static"
    static.mkdir(parents=True)
    (tmp_path / "visdom" / "VERSION").write_text("0.2.4\n")
    (static / "index.html").write_text('<link href={{ static_url("../user/style.css") }}>\n')
    return static


def test_assets_install_verify_and_are_idempotent(tmp_path, monkeypatch):
    assets = load_assets_script()
    tarballs = tmp_path / "tarballs"
    tarballs.mkdir()
    monkeypatch.setattr(assets, "PACKAGES", fake_registry(tarballs, assets))
    static = fake_visdom_package(tmp_path)
    assert "version.built" in assets.missing_assets(static)

    written = assets.install(static, tarball_dir=tarballs)
    assert written == len(assets.ASSETS)
    assert assets.missing_assets(static) == []
    assert (static / "version.built").read_text() == "0.2.4"  # what visdom compares to skip its download
    assert (static / "js" / "mathjax" / "2.7.5" / "MathJax.js").is_file()
    assert (static / "fonts" / "glyphicons-halflings-regular.svg#glyphicons_halflingsregular").is_file()
    assert (static / "fonts" / "classnames").read_text().startswith("/* classnames index.js")
    assert 'static_url("../user/style.css")' not in (static / "index.html").read_text()
    assert assets.install(static, tarball_dir=tarballs) == 0  # nothing to do

    (static / "js" / "sjcl.js").unlink()
    assert assets.missing_assets(static) == ["js/sjcl.js"]
    assert assets.install(static, tarball_dir=tarballs) == 1  # only the package that lost a file

    (tarballs / assets.PACKAGES["d3"].tarball_name).write_bytes(b"not the published file")
    with pytest.raises(RuntimeError, match="does not match"):
        assets.install(static, tarball_dir=tarballs, force=True)
    with pytest.raises(FileNotFoundError, match="npm pack"):
        assets.install(static, tarball_dir=tmp_path / "empty", force=True)


# ---------------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def visdom_server(tmp_path_factory):
    """`python -m visdom.server` on a free loopback port, with the offline assets installed first."""
    assets = load_assets_script()
    if assets.missing_assets(assets.visdom_static_dir()):
        proc = subprocess.run([sys.executable, "-m", "scripts.tools.install_visdom_assets"],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail("visdom web assets are missing and could not be installed:\n" + proc.stderr[-2000:])
    port = free_port()
    env_dir = tmp_path_factory.mktemp("visdom_env")
    log_path = env_dir / "server.log"
    with open(log_path, "w") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "visdom.server", "-port", str(port), "--hostname", "127.0.0.1", "-bind_local",
             "-env_path", str(env_dir)], stdout=server_log, stderr=subprocess.STDOUT, cwd=str(env_dir))
    try:
        deadline = time.monotonic() + 90
        while http_status(f"http://127.0.0.1:{port}/") != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"visdom server did not come up (exit code {server.poll()}):\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_server_starts_offline_and_serves_its_page_and_assets(visdom_server):
    base = f"http://127.0.0.1:{visdom_server}"
    assert http_status(base + "/") == 200  # the page template renders (Tornado >= 6.6 fix applied)
    for asset in ("js/plotly-plotly.min.js", "js/react-react.min.js", "js/mathjax/2.7.5/MathJax.js",
                  "css/bootstrap.min.css", "fonts/glyphicons-halflings-regular.woff2"):
        assert http_status(f"{base}/static/{asset}") == 200, asset


def browser_dom(port, name, profile):
    """The visdom page of environment `name` as headless Chromium renders it (after plotly has drawn)."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=10000", "--dump-dom",
         f"http://127.0.0.1:{port}/env/{name}"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "<html" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
@pytest.mark.slow
def test_training_run_renders_in_the_browser_and_keeps_its_history_after_a_resume(visdom_server, demo_root,
                                                                                   tmp_path):
    name = "browser_run"
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", name,
            "--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36",
            "--crop_size", "32", "--batch_size", "4", "--num_threads", "0", "--seed", "0",
            "--n_epochs_decay", "0", "--print_freq", "4", "--display_freq", "4",
            "--update_html_freq", "8", "--save_latest_freq", "1000",
            "--display_id", "1", "--display_server", "http://127.0.0.1", "--display_port", visdom_server]
    first = run_cli("train.py", *args, "--n_epochs", "1", timeout=200)
    assert first.stdout.count(f"visdom: the live display of this run is at http://127.0.0.1:{visdom_server}"
                              f"/env/{name}") == 1
    assert (tmp_path / name / "web" / "index.html").is_file()
    dom = browser_dom(visdom_server, name, tmp_path / "chromium_profile")
    # The three windows, by their titles as the page shows them.
    for title in (f"{name}: images (epoch 1, 8 images seen)", f"{name}: losses",
                  f"{name}: convergence (-L_GAN = D_real + D_fake)"):
        assert title in dom, title
    # The image grid arrived as image data, and plotly drew the panels: one per loss, and the convergence one.
    assert 'src="data:image/png;base64,' in dom
    assert dom.count('class="main-svg"') >= 2
    assert dom.count('class="trace scatter') >= 4 + 2  # G_GAN, G_L1, D_real, D_fake; -L_GAN and log 4
    for legend in ("G_L1", "D_fake", "log 4 = 1.386"):
        assert legend in dom, legend
    # 8 images, 4 a step, a print every step: 2 points per loss panel, 1 convergence point; all with markers
    assert dom.count('class="point"') == 4 * 2 + 1

    # A resume (a new process) redraws the windows from the run's logs: the points of epoch 1 are still there.
    run_cli("train.py", *args, "--n_epochs", "2", "--continue_train", timeout=200)
    dom = browser_dom(visdom_server, name, tmp_path / "chromium_profile_2")
    assert f"{name}: images (epoch 2, 16 images seen)" in dom
    assert dom.count('class="point"') == 4 * 4 + 2
