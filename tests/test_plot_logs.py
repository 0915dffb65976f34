"""scripts/analysis/plot_logs.py draws the convergence (with log 4) and loss curves of several runs from their CSVs."""
import csv
import importlib
import math
import os

import numpy as np
import pytest
from PIL import Image

from util.run import run_logs



def load_plot_logs():
    return importlib.import_module("scripts.analysis.plot_logs")


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_run(run_dir, losses=("G_GAN", "G_L1", "D_real", "D_fake"), epochs=3, images_per_epoch=8, print_every=4):
    """CSV logs with the columns train.py writes."""
    os.makedirs(run_dir, exist_ok=True)
    rows, total = [], 0
    for epoch in range(1, epochs + 1):
        for iters in range(print_every, images_per_epoch + 1, print_every):
            total += print_every
            rows.append(dict(epoch=epoch, iters=iters, total_iters=total,
                             **{name: 1.0 / (total + k) for k, name in enumerate(losses)},
                             time_per_image=0.1, data_time=0.01))
    write_csv(os.path.join(run_dir, "loss_log.csv"), rows)
    conv = [dict(epoch=e, D_real=0.6, D_fake=0.5 + 0.1 * e, neg_L_GAN=1.1 + 0.1 * e,
                 neg_L_GAN_minus_log4=1.1 + 0.1 * e - math.log(4)) for e in range(1, epochs + 1)]
    write_csv(os.path.join(run_dir, "convergence.csv"), conv)
    return str(run_dir)


def test_fractional_epoch_from_iters_within_epoch():
    rows = [dict(epoch=1, iters=4), dict(epoch=1, iters=8), dict(epoch=2, iters=4), dict(epoch=2, iters=8),
            dict(epoch=3, iters=4)]
    assert run_logs.fractional_epochs(rows).tolist() == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert run_logs.fractional_epochs([dict(epoch=1, iters=3, epoch_frac=0.25)]).tolist() == [0.25]
    # with the images one process sees per epoch (what the dashboard passes), x is exactly the live one
    assert run_logs.fractional_epochs(rows, images_per_epoch=16).tolist() == [0.25, 0.5, 1.25, 1.5, 2.25]


def test_several_runs_on_one_figure_with_the_log4_line(tmp_path):
    plot_logs = load_plot_logs()
    atme = make_run(tmp_path / "atme")
    segan = make_run(tmp_path / "segan", losses=("G_GAN", "G_L1", "D_real", "D_fake", "MI"), epochs=2)
    out = tmp_path / "figs" / "fig.png"
    conv_fig, loss_fig = plot_logs.plot_runs([atme, segan], str(out))
    lines = conv_fig.axes[0].get_lines()
    assert len(lines) == 3  # two runs + log 4
    flat = [ln for ln in lines if np.allclose(ln.get_ydata(), math.log(4))]
    assert len(flat) == 1
    assert lines[0].get_xdata().tolist() == [1, 2, 3] and lines[1].get_xdata().tolist() == [1, 2]
    panels = {ax.get_title(): len(ax.get_lines()) for ax in loss_fig.axes}
    assert panels == {"G_GAN": 2, "G_L1": 2, "D_real": 2, "D_fake": 2, "MI": 1}  # MI only in SEGAN
    for png in (out, tmp_path / "figs" / "fig_losses.png"):
        image = np.asarray(Image.open(png).convert("L"))
        assert image.size > 0 and image.std() > 0  # drawn, not blank


def test_cli_writes_pngs_and_reports_missing_runs(tmp_path, caplog):
    run = make_run(tmp_path / "run1")
    out = tmp_path / "c.png"
    assert load_plot_logs().main([str(run), "--out", str(out), "--loss_out", str(tmp_path / "l.png")]) == 0
    assert Image.open(out).size[0] > 100 and Image.open(tmp_path / "l.png").size[0] > 100
    assert load_plot_logs().main([run, str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "missing does not exist" in caplog.text


def test_run_without_logs_is_a_clear_error(tmp_path):
    plot_logs = load_plot_logs()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="convergence.csv or loss_log.csv"):
        plot_logs.plot_runs([str(tmp_path / "empty")], str(tmp_path / "x.png"))
    bad = tmp_path / "bad"
    bad.mkdir()
    write_csv(bad / "convergence.csv", [dict(epoch=1, D_real=0.5)])
    with pytest.raises(ValueError, match="neg_L_GAN"):
        plot_logs.read_convergence(str(bad))


def test_each_run_gets_the_equilibrium_of_its_gan_mode(tmp_path):
    plot_logs = load_plot_logs()
    vanilla = make_run(tmp_path / "vanilla", epochs=2)
    lsgan = make_run(tmp_path / "lsgan", epochs=2)
    write_csv(os.path.join(lsgan, "convergence.csv"),
              [dict(epoch=e, D_real=0.3, D_fake=0.2, neg_L_GAN=0.5, neg_L_GAN_minus_half=0.0) for e in (1, 2)])
    wgan = make_run(tmp_path / "wgan", epochs=2)
    write_csv(os.path.join(wgan, "convergence.csv"),
              [dict(epoch=e, D_real=-1.0, D_fake=0.5, wasserstein_estimate=0.5) for e in (1, 2)])
    conv_fig, _ = plot_logs.plot_runs([vanilla, lsgan, wgan], str(tmp_path / "c.png"))
    ax = conv_fig.axes[0]
    flat = sorted(float(line.get_ydata()[0]) for line in ax.get_lines() if np.ptp(line.get_ydata()) == 0
                  and len(line.get_ydata()) > 0 and line.get_label() not in ("vanilla", "lsgan", "wgan"))
    assert flat == pytest.approx([0.5, math.log(4)])  # vanilla's log 4 and least squares' 1/2; none for wgangp
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend[:3] == ["vanilla", "lsgan", "wgan"] and len(legend) == 5  # every line is named


def test_plot_logs_imports_no_dashboard_sink():
    """plot_logs draws with util.views.figures; nothing it imports (transitively, inside the repository) reaches
    util.dashboard or a visdom client."""
    import ast
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seen, todo = set(), ["scripts.analysis.plot_logs"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = os.path.join(root, *module.split(".")) + ".py"
        if not os.path.isfile(path):
            path = os.path.join(root, *module.split("."), "__init__.py")
        if not os.path.isfile(path):
            continue  # outside the repository
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    assert "util.views.figures" in seen and "util.run.run_logs" in seen
    assert not [m for m in seen if m.startswith(("util.dashboard", "visdom"))], sorted(seen)
