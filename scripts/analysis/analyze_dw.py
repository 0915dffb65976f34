"""Is W_t a Brownian motion over the epochs? Increment statistics of the ATME noise history.

    python train.py --model atme ... --n_save_noisy 8      # saves <run_dir>/noisy_history/ every epoch
    python -m scripts.analysis.analyze_dw checkpoints/facades_atme_BtoA [--which W] [--epochs 1:50]

The ATME paper asks W_t = W(D_{t-1}) to initially follow a Brownian motion through the epochs; its increments
W_t - W_{t-1} are then independent and normal. Per saved image this reports the lag-1 autocorrelation of the
increments over epochs (near 0 for independent increments, near 1 for a smooth drift) and normality tests of
them (D'Agostino-Pearson on the increments pooled over pixels after a leave-one-out standardisation per pixel,
and the fraction of pixels whose own increments fail a Shapiro-Wilk test, about alpha under normality).
Writes dw_analysis.json and dw_analysis.png into the history folder.
"""
import argparse
import logging
import os
import re
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

if not __package__:  # run as `python scripts/analysis/analyze_dw.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from util.run.atomic import write_json

log = logging.getLogger("analyze_dw")

# models/atme_model.py writes one (H, W) map per image and epoch: epoch_<E>_img_<index>_<W|D>.npy; a stacked
# layout epoch_<E>_<W|D>.npy of shape (K, 1, H, W) or (K, H, W) is read too.
PER_IMAGE = re.compile(r"^epoch_(?P<epoch>\d+)_img_(?P<image>\d+)_(?P<which>[WD])\.npy$")
STACKED = re.compile(r"^epoch_(?P<epoch>\d+)_(?P<which>[WD])\.npy$")


def history_dir(path):
    inner = os.path.join(path, "noisy_history")
    directory = inner if os.path.isdir(inner) else path
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path} holds no noisy_history/ folder: train ATME with --n_save_noisy K to save "
                                "W_t and D_t of K images every epoch")
    return directory


def load_map(path):
    """One saved map: a plain numeric .npy, read without pickle (a file from someone else cannot run code). Anything
    else is a ValueError naming the file and what to do."""
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:  # "Object arrays cannot be loaded when allow_pickle=False", or not an .npy at all
        kind = "holds Python objects (a pickled array), which are not read because reading them could run code" \
            if "allow_pickle" in str(err) else f"is not a readable .npy file ({err})"
        raise ValueError(f"{path} {kind}. The noise history holds plain float arrays as train.py --n_save_noisy "
                         f"writes them: remove or replace this file (or pass --epochs to leave its epoch out), or "
                         f"save the history again with train.py") from None
    except OSError as err:
        raise ValueError(f"{path} could not be read ({err.strerror or err}): it may be truncated. Remove or "
                         f"replace it, or pass --epochs to leave its epoch out") from None
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path} holds {array.dtype} values, not numbers: remove or replace it")
    return array


def load_history(directory, which="W", window=(None, None)):
    """{image id: (epochs (T,), maps (T, H, W))} from a noisy_history folder; files of epochs outside `window`
    (START, END; None: open) are not read."""
    found = defaultdict(dict)
    start, end = window

    def outside(match):
        epoch = int(match.group("epoch"))
        return (start is not None and epoch < start) or (end is not None and epoch > end)

    for name in sorted(os.listdir(directory)):
        match = PER_IMAGE.match(name) or STACKED.match(name)
        if match and outside(match):
            continue
        match = PER_IMAGE.match(name)
        if match and match.group("which") == which:
            found[int(match.group("image"))][int(match.group("epoch"))] = load_map(os.path.join(directory, name))
            continue
        match = STACKED.match(name)
        if match and match.group("which") == which:
            maps = load_map(os.path.join(directory, name))
            maps = maps.reshape(maps.shape[0], *maps.shape[-2:])  # (K, 1, H, W) or (K, H, W) -> (K, H, W)
            for k, one in enumerate(maps):
                found[k][int(match.group("epoch"))] = one
    if not found:
        raise FileNotFoundError(f"no epoch_<E>_img_<i>_{which}.npy (or epoch_<E>_{which}.npy) files in {directory}")
    history = {}
    for image, by_epoch in sorted(found.items()):
        epochs = np.array(sorted(by_epoch))
        history[image] = (epochs, np.stack([np.asarray(by_epoch[e], dtype=np.float64).squeeze() for e in epochs]))
    return history


def autocorrelation(increments, lag=1):
    """Lag-`lag` autocorrelation over time of increments (T, P), pooled over pixels (each centred in time)."""
    centred = increments - increments.mean(axis=0, keepdims=True)
    denominator = (centred ** 2).sum()
    if denominator == 0:
        return float("nan")
    return float((centred[:-lag] * centred[lag:]).sum() / denominator)


def leave_one_out_z(increments):
    """Increments (n, P) -> values that are exactly N(0, 1) when each pixel's increments are iid normal.

    Standardising with a pixel's own mean and std biases the pooled kurtosis low (a visible effect at a few
    thousand values); with the mean and std of the other n-1 increments, (x_i - mean) / (std * sqrt(1 + 1/(n-1)))
    is Student-t with n-2 degrees of freedom, which the t CDF and the normal quantile map to N(0, 1).
    """
    n = increments.shape[0]
    total, squares = increments.sum(axis=0), (increments ** 2).sum(axis=0)
    mean_rest = (total - increments) / (n - 1)
    var_rest = (squares - increments ** 2 - (n - 1) * mean_rest ** 2) / (n - 2)
    t = (increments - mean_rest) / np.sqrt(np.maximum(var_rest, 1e-300) * (1 + 1 / (n - 1)))
    return stats.norm.ppf(np.clip(stats.t.cdf(t, df=n - 2), 1e-12, 1 - 1e-12))


def analyze_image(epochs, maps, max_pixels=256, alpha=0.05, max_lag=10, seed=0):
    """Increment statistics of one image's maps (T, H, W) over the given epochs."""
    if len(epochs) < 5:
        raise ValueError(f"need at least 5 saved epochs to test increments, got {len(epochs)}: train longer or "
                         "widen --epochs")
    gaps = np.unique(np.diff(epochs))
    if len(gaps) > 1:
        log.warning("saved epochs are not evenly spaced (gaps %s); increments span different times", gaps.tolist())
    increments = np.diff(maps.reshape(len(epochs), -1), axis=0)  # (T-1, P)
    moving = increments.std(axis=0) > 0
    if not moving.any():
        raise ValueError("the maps never change between epochs: nothing to test")
    increments = increments[:, moving]
    rng = np.random.default_rng(seed)
    if increments.shape[1] > max_pixels:  # neighbouring pixels are correlated; a sample keeps tests honest
        increments = increments[:, np.sort(rng.choice(increments.shape[1], max_pixels, replace=False))]
    pooled = leave_one_out_z(increments).ravel()
    normal_p = float(stats.normaltest(pooled).pvalue) if pooled.size >= 20 else float("nan")
    shapiro = [stats.shapiro(column).pvalue for column in increments.T]
    lags = range(1, min(max_lag, len(increments) - 2) + 1)
    return dict(epochs=[int(epochs[0]), int(epochs[-1])], n_epochs=int(len(epochs)),
                n_pixels=int(increments.shape[1]), autocorr_lag1=autocorrelation(increments, 1),
                autocorr=[autocorrelation(increments, k) for k in lags],
                normality_p=normal_p, normality_rejected=bool(normal_p < alpha),
                frac_pixels_non_normal=float(np.mean(np.array(shapiro) < alpha)) if shapiro else float("nan"),
                increment_std=float(np.mean(increments.std(axis=0))),
                spatial_mean=maps.reshape(len(epochs), -1).mean(axis=1).tolist(),
                standardised_sample=pooled[:2000].tolist())


def plot(results, path, which):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for image, r in results.items():
        epochs = np.arange(r["epochs"][0], r["epochs"][0] + len(r["spatial_mean"]))
        axes[0].plot(epochs, r["spatial_mean"], label=f"image {image}")
        axes[1].plot(range(1, len(r["autocorr"]) + 1), r["autocorr"], marker="o", label=f"image {image}")
    n = max(r["n_epochs"] - 1 for r in results.values())
    band = 2 / np.sqrt(n)
    axes[1].axhspan(-band, band, color="grey", alpha=0.2, label="±2/√n (one pixel, independent)")
    axes[1].axhline(0, color="black", lw=0.8)
    for image, r in results.items():
        axes[2].hist(r["standardised_sample"], bins=40, range=(-4, 4), density=True, histtype="step",
                     label=f"image {image}")
    grid = np.linspace(-4, 4, 200)
    axes[2].plot(grid, stats.norm.pdf(grid), color="black", label="N(0, 1)")
    axes[0].set(title=f"{which}_t: spatial mean per image", xlabel="epoch")
    axes[1].set(title=f"autocorrelation of {which}_t - {which}_(t-1)", xlabel="lag (epochs)")
    axes[2].set(title="increments vs normal", xlabel="standardised increment")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_window(text):
    if not text:
        return None, None
    start, sep, end = text.partition(":")
    if not sep:
        raise ValueError(f"--epochs {text!r} must look like START:END (either side may be empty)")
    return (int(start) if start else None), (int(end) if end else None)


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a run directory (checkpoints/<name>) or its noisy_history/ folder")
    p.add_argument("--which", default="W", choices=("W", "D"), help="analyse W_t (default) or D_t")
    p.add_argument("--epochs", default="", help="window START:END of epochs (e.g. 1:50 for the early phase)")
    p.add_argument("--max_pixels", type=int, default=256, help="pixels sampled per image for the tests")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the normality tests")
    p.add_argument("--out", default=None, help="JSON output (default: <history>/dw_analysis.json)")
    p.add_argument("--plot", default=None, help="PNG output (default: <history>/dw_analysis.png)")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    directory = history_dir(args.run_dir)
    start, end = parse_window(args.epochs)
    results = {}
    for image, (epochs, maps) in load_history(directory, args.which, (start, end)).items():
        keep = (epochs >= (start if start is not None else epochs[0])) & \
               (epochs <= (end if end is not None else epochs[-1]))
        r = analyze_image(epochs[keep], maps[keep], args.max_pixels, args.alpha)
        results[image] = r
        log.info("image %d, epochs %d-%d: lag-1 autocorrelation of increments %+.3f; normality p = %.3g (%s at "
                 "%.2f); %.0f%% of pixels reject normality", image, *r["epochs"], r["autocorr_lag1"],
                 r["normality_p"], "rejected" if r["normality_rejected"] else "not rejected", args.alpha,
                 100 * r["frac_pixels_non_normal"])
    plot_path = args.plot or os.path.join(directory, "dw_analysis.png")
    plot(results, plot_path, args.which)
    summary = dict(which=args.which, history=directory, alpha=args.alpha,
                   mean_autocorr_lag1=float(np.mean([r["autocorr_lag1"] for r in results.values()])),
                   images={str(k): {key: v for key, v in r.items() if key != "standardised_sample"}
                           for k, r in results.items()})
    write_json(args.out or os.path.join(directory, "dw_analysis.json"), summary)
    log.info("mean lag-1 autocorrelation %.3f over %d images; plot %s", summary["mean_autocorr_lag1"],
             len(results), plot_path)
    return summary


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: main() and 0)  # one-line errors for users; main() returns its results for tests
