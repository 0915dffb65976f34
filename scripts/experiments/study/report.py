"""The study's figures and tables, computed from CSV files only: each run folder's `convergence.csv` and
`val_log.csv` (train.py) and its `<study_dir>/eval/<run>/*.csv` (evaluation), so every number can be recomputed.

- `convergence.png`: per model, the mean over seeds of the smoothed convergence quantity of the runs' --gan_mode
  (util.run.convergence) per epoch with the raw mean as dots, a band of +- one standard deviation over seeds (more
  than one seed), and the equilibrium line;
- `validation.png`: the same for L1 and PSNR on the val split;
- `summary.md` / `summary.csv`: per model (and variant, in a variants study), mean and spread over seeds of
  |quantity - equilibrium| over the last k epochs and its slope, the test L1 / PSNR (and KID), every network's
  parameters and the G/D ratio; a second table with the mean and min..max over seeds of the distance, test L1,
  PSNR and the training time per run (train.py's wall time summed over the run's jobs, `jobs/<run>/train_time.csv`);
  for SEGAN runs a third table of diversity, fidelity and input dependence (`diversity_summary.csv`);
- `per_run.csv`: the same numbers per run, before the mean over seeds.

Smoothing (the paper's Fig. 3 is smoothed without saying how): a local straight-line fit, epoch e showing the
least-squares line through the `window` epochs around e (shifted inward at the first and last epochs), evaluated
at e. A straight line stays exactly itself, so nothing bends at the start, and the last epoch shows the trend of
the last epochs, not their lagging mean. The figures draw the raw mean over seeds as dots behind the smoothed
line; the band (one standard deviation over seeds) only when an entry has more than one seed. The tables use the
raw per-epoch values.
"""
import math
import os
import textwrap
from collections import OrderedDict

import numpy as np

from scripts.experiments.jobs.events import events_path, train_seconds
from scripts.experiments.study.evaluation import eval_dir
from scripts.experiments.study.plan import group_label, jobs_dir
from scripts.experiments.study.records import read_convergence, read_rows, read_validation, write_rows
from util.run.atomic import atomic_write_text
from util.views.figures import new_figure, save_figure

GENERATOR_SIDE = ("G", "W")  # networks on the generator's side: ATME's W learns with G and is part of it
NETWORK_ORDER = ("G", "W", "D", "T")
DIVERSITY_COLUMNS = ("diversity", "fidelity", "cross_input", "target_distance")
SPREAD_COLUMNS = ("dist_last_k", "test_l1", "test_psnr", "train_minutes")  # with min..max over seeds


def smooth(values, window, x=None):
    """Local linear smoothing: at each point, the least-squares line through the `window` points nearest to it
    in order (centred, shifted inward at both ends; all points when there are fewer), evaluated there. `x` are
    the points' positions (default 0, 1, 2, ...). Exact on a straight line, endpoints included."""
    values = np.asarray(values, dtype=float)
    n = values.size
    window = min(int(window), n)
    if window <= 1:
        return values.copy()
    x = np.arange(n, dtype=float) if x is None else np.asarray(x, dtype=float)
    out = np.empty(n)
    for i in range(n):
        start = min(max(i - (window - 1) // 2, 0), n - window)
        xs, ys = x[start:start + window], values[start:start + window]
        centre = xs.mean()
        spread = ((xs - centre) ** 2).sum()
        slope = ((xs - centre) * (ys - ys.mean())).sum() / spread if spread > 0 else 0.0
        out[i] = ys.mean() + slope * (x[i] - centre)
    return out


def mean_std(values):
    """(mean, sample standard deviation) of the finite values; the std is nan for fewer than two."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def min_max(values):
    """(min, max) of the finite values (nan, nan without any)."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    return (float(min(v)), float(max(v))) if v else (math.nan, math.nan)


def last_k_stats(epochs, distance, k):
    """(mean, least-squares slope per epoch) of `distance` over the last k epochs."""
    k = min(int(k), len(epochs))
    e, d = np.asarray(epochs[-k:], dtype=float), np.asarray(distance[-k:], dtype=float)
    slope = float(np.polyfit(e, d, 1)[0]) if k >= 2 else math.nan
    return float(d.mean()), slope


def _first_row(path):
    if not os.path.isfile(path):
        return None
    rows = read_rows(path, "an evaluation file")
    return rows[0] if rows else None


def run_record(run, study_dir, k):
    """The numbers of one run, from its CSV files."""
    q, epochs, values = read_convergence(run.run_dir)
    distance = np.abs(values - q.equilibrium) if q.equilibrium is not None else values
    dist_mean, slope = last_k_stats(epochs, distance, k)
    record = OrderedDict(entry=run.entry, variant=run.variant, seed=run.seed, name=run.name, quantity=q.column,
                         epochs=int(epochs[-1]), last_value=float(values[-1]), dist_last_k=dist_mean,
                         slope_last_k=slope)
    out = eval_dir(study_dir, run.name)
    test = _first_row(os.path.join(out, "test_metrics.csv")) or {}
    record["test_phase"] = test.get("phase", "")
    record["test_l1"], record["test_psnr"] = float(test.get("l1", "nan")), float(test.get("psnr", "nan"))
    kid = _first_row(os.path.join(out, "kid.csv")) or {}
    record["kid_x100"] = float(kid.get("kid_x100_mean", "nan"))
    params = OrderedDict()
    path = os.path.join(out, "params.csv")
    for row in (read_rows(path, "the study writes it") if os.path.isfile(path) else []):
        params[row["network"]] = int(row["parameters"])
    for name in NETWORK_ORDER:
        record[f"params_{name}"] = params.get(name, "")
    generator = sum(params.get(n, 0) for n in GENERATOR_SIDE)
    record["g_over_d"] = generator / params["D"] if params.get("D") else math.nan
    record["train_minutes"] = train_seconds(events_path(jobs_dir(study_dir), run.name)) / 60
    path = os.path.join(out, "diversity.csv")
    if os.path.isfile(path):
        rows = read_rows(path, "the study writes it for SEGAN runs")
        record["diversity_metric"], record["diversity_scale"] = rows[0]["metric"], rows[0]["scale"]
        for column in DIVERSITY_COLUMNS:
            record[column], record[f"{column}_draw_std"] = mean_std([float(r[column]) for r in rows])
        record["n_draws"], record["n_codes"], record["n_inputs"] = len(rows), rows[0]["n_codes"], rows[0]["n_inputs"]
    return record, (q, epochs, values)


def short_label(quantity):
    """'-L_GAN' or "critic's Wasserstein estimate": the quantity's label without its definition."""
    return quantity.label.split(" = ")[0]


def _format(mean, std, digits):
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def _millions(count):
    return f"{count / 1e6:.3f} M" if count != "" else "-"


def summarize(records, k):
    """One row per entry and variant (in the study's order): means and standard deviations over its seeds, and
    min..max for the SPREAD_COLUMNS."""
    rows = OrderedDict()
    for record in records:
        rows.setdefault((record["entry"], record["variant"]), []).append(record)
    summary = []
    for (entry, variant), runs in rows.items():
        row = OrderedDict(entry=entry, variant=variant, seeds=len(runs), quantity=runs[0]["quantity"], last_k=k)
        for key in ("dist_last_k", "slope_last_k", "test_l1", "test_psnr", "kid_x100", "train_minutes"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([r[key] for r in runs])
        for key in SPREAD_COLUMNS:
            row[f"{key}_min"], row[f"{key}_max"] = min_max([r[key] for r in runs])
        for name in NETWORK_ORDER:
            row[f"params_{name}"] = runs[0][f"params_{name}"]
        row["g_over_d"] = runs[0]["g_over_d"]
        if "diversity" in runs[0]:
            row["diversity_metric"], row["diversity_scale"] = runs[0]["diversity_metric"], runs[0]["diversity_scale"]
            for column in DIVERSITY_COLUMNS:
                row[f"{column}_mean"], row[f"{column}_std"] = mean_std([r[column] for r in runs])
                row[f"{column}_draw_std"] = float(np.mean([r[f"{column}_draw_std"] for r in runs]))
            ratios = [r["cross_input"] / r["target_distance"] for r in runs]
            row["input_dependence_mean"], row["input_dependence_std"] = mean_std(ratios)
            row["n_draws"], row["n_codes"], row["n_inputs"] = runs[0]["n_draws"], runs[0]["n_codes"], runs[0]["n_inputs"]
        summary.append(row)
    return summary


def _spread(row, key, digits):
    """'mean (min..max)' over seeds; the mean alone for one seed."""
    mean, low, high = row[f"{key}_mean"], row[f"{key}_min"], row[f"{key}_max"]
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ({low:.{digits}f}..{high:.{digits}f})" if row["seeds"] > 1 else f"{mean:.{digits}f}"


def spread_table(summary, target, k, test_phase):
    """Per entry and variant: mean (min..max over seeds) of the distance, test L1, PSNR and time per run."""
    lines = [f"| model | seeds | {target}, last {k} epochs | {test_phase} L1 | {test_phase} PSNR (dB) | "
             f"training time per run (min) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        lines.append(f"| {group_label(r['entry'], r['variant'])} | {r['seeds']} | {_spread(r, 'dist_last_k', 4)} | "
                     f"{_spread(r, 'test_l1', 4)} | {_spread(r, 'test_psnr', 2)} | "
                     f"{_spread(r, 'train_minutes', 1)} |")
    return lines


def markdown(summary, quantity, k, window, test_phase):
    q = quantity
    name = short_label(q)
    target = f"distance of {name} to {q.equilibrium_label}" if q.equilibrium is not None else name
    lines = [f"| model | seeds | {target}, last {k} epochs | its slope per epoch | {test_phase} L1 | "
             f"{test_phase} PSNR (dB) | KID x100 | G | W | D | T | G/D |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary:
        lines.append(
            f"| {group_label(r['entry'], r['variant'])} | {r['seeds']} | {_format(r['dist_last_k_mean'], r['dist_last_k_std'], 4)} | "
            f"{_format(r['slope_last_k_mean'], r['slope_last_k_std'], 4)} | "
            f"{_format(r['test_l1_mean'], r['test_l1_std'], 4)} | {_format(r['test_psnr_mean'], r['test_psnr_std'], 2)} | "
            f"{_format(r['kid_x100_mean'], r['kid_x100_std'], 2)} | "
            + " | ".join(_millions(r[f"params_{n}"]) for n in NETWORK_ORDER)
            + f" | {r['g_over_d']:.1f} |")
    notes = [
        "",
        f"Values are mean ± sample standard deviation over seeds (one value: one seed). {name} per epoch is the "
        f"`{q.column}` column of each run's convergence.csv ({q.label}); the table uses the raw values of the last {k} epochs (their "
        f"mean, and the least-squares slope of the distance per epoch: negative = approaching"
        + (f" {q.equilibrium_label})." if q.equilibrium is not None else "; no equilibrium for this --gan_mode)."),
        f"The figures smooth each run's curve with a local linear fit over {window} epochs (epoch e shows the "
        f"least-squares line through the {window} epochs around e, at e; exact on a straight line, so neither the "
        "first nor the last epochs bend), then average over seeds; dots are the raw mean over seeds; the band, "
        "drawn for entries with more than one seed, is ± one standard deviation over seeds.",
        f"{test_phase} L1 is the mean |output - target| on the [-1, 1] image scale and PSNR uses a data range of 2, as "
        "train.py's val_log.csv; networks in eval mode, checkpoint `latest`. KID x100 needs the Inception weights "
        "(n/a without them). Parameters per network; G/D is (G + W) / D, W being ATME's ear for D.",
        "",
        "Mean and (min..max) over seeds:",
        "",
        *spread_table(summary, target, k, test_phase),
        "",
        "Training time per run: train.py's wall time summed over the run's jobs (each part of a preempted run "
        "counts; test and evaluation not included; n/a for runs trained before the jobs recorded it). Runs that "
        "trained side by side (--max_parallel > 1) shared the machine.",
    ]
    segan = [r for r in summary if "diversity_mean" in r]
    if segan:
        first = segan[0]
        notes += ["", f"SEGAN: {first['n_draws']} draws of {first['n_codes']} codes, {first['n_inputs']} {test_phase} "
                      f"inputs; metric {first['diversity_metric']}; scale: {first['diversity_scale']}.", "",
                  "| model | seeds | diversity | spread over draws | fidelity (to target) | cross-input (same code) | "
                  "target distance | cross-input / target |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in segan:
            notes.append(
                f"| {group_label(r['entry'], r['variant'])} | {r['seeds']} | {_format(r['diversity_mean'], r['diversity_std'], 4)} | "
                f"{r['diversity_draw_std']:.4f} | {_format(r['fidelity_mean'], r['fidelity_std'], 4)} | "
                f"{_format(r['cross_input_mean'], r['cross_input_std'], 4)} | "
                f"{_format(r['target_distance_mean'], r['target_distance_std'], 4)} | "
                f"{_format(r['input_dependence_mean'], r['input_dependence_std'], 3)} |")
        notes += ["", "diversity: outputs of one input under two codes; fidelity: an output against its target; "
                      "cross-input: outputs of two inputs under one code; target distance: two inputs' targets. A "
                      "generator that ignores its input has a cross-input / target ratio near 0, however diverse. "
                      "Spread over seeds after ±; 'spread over draws': the standard deviation over draws within a "
                      "run, averaged over runs."]
    return "\n".join(lines + notes) + "\n"


def _curve_band(curves):
    """(epochs, mean, std) over runs of {epoch: value} curves, on the epochs all runs have (std: None for one
    run)."""
    common = sorted(set.intersection(*(set(c) for c in curves)))
    stack = np.array([[c[e] for e in common] for c in curves], dtype=float)
    std = stack.std(axis=0, ddof=1) if len(curves) > 1 else None
    return np.array(common, dtype=float), stack.mean(axis=0), std


def band_note(groups):
    """How the figure's band reads: it is drawn for entries with more than one seed only."""
    counts = [len(curves) for curves in groups.values()]
    if all(n > 1 for n in counts):
        return "band ± 1 std over seeds"
    if any(n > 1 for n in counts):
        return "band ± 1 std over seeds (entries with n > 1)"
    return "one seed: no band"


def _draw_panel(ax, groups, window, ylabel, title):
    """Per entry: the mean over seeds of each run's smoothed curve (line), the raw mean over seeds (dots) and,
    with more than one seed, a band of ± one standard deviation of the smoothed curves over seeds."""
    from matplotlib.ticker import MaxNLocator
    for label, curves in groups.items():
        epochs, mean, std = _curve_band([dict(zip(e, smooth(v, window, e))) for e, v in curves])
        _, raw, _ = _curve_band([dict(zip(e, v)) for e, v in curves])
        line, = ax.plot(epochs, mean, linewidth=1.6, label=label)
        ax.plot(epochs, raw, linestyle="none", marker="o", markersize=2.5, alpha=0.45, color=line.get_color())
        if std is not None:
            ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)


def wrapped(title, width):
    """`title` wrapped to `width` characters a line (its own line breaks kept), so it fits above its panel."""
    return "\n".join(line for part in title.split("\n") for line in textwrap.wrap(part, width))


def title_room(fig, lines):
    """The top margin (figure fraction) that leaves room for titles of `lines` lines at fontsize 9."""
    return 1 - (0.25 + 0.16 * lines) / fig.get_figheight()


def _fit_text(groups, window):
    """'a local linear fit over 5 epochs', or over all of them when the runs are shorter than the window."""
    longest = max(len(e) for curves in groups.values() for e, _ in curves)
    return f"a local linear fit over {window} epochs" if longest > window else \
        f"the least-squares line through all {longest} epochs (fewer than --smooth {window})"


def _seed_text(seeds):
    return f"of seed {seeds[0]}" if len(seeds) == 1 else "mean over seeds " + ", ".join(map(str, seeds))


def convergence_plot(path, groups, quantity, window, seeds):
    """`seeds`: the seeds of the study's runs, named in the title."""
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    title = wrapped(f"{short_label(quantity)} per epoch, {_seed_text(seeds)}: dots raw, line "
                    f"{_fit_text(groups, window)};\n{band_note(groups)}", 95)
    _draw_panel(ax, groups, window, quantity.label, title)
    if quantity.equilibrium is not None:
        ax.axhline(quantity.equilibrium, color="black", linestyle="--", linewidth=1,
                   label=f"equilibrium {quantity.equilibrium_label}")
    ax.legend(loc="best", fontsize=7)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=title_room(fig, title.count("\n") + 1))
    save_figure(fig, path)
    return fig


def validation_plot(path, groups_l1, groups_psnr, window):
    fig = new_figure(11, 4.2)
    lines = 1
    for index, (groups, ylabel) in enumerate(((groups_l1, "val L1 ([-1, 1] scale)"), (groups_psnr, "val PSNR (dB)"))):
        ax = fig.add_subplot(1, 2, index + 1)
        title = wrapped(f"{ylabel}: dots raw, line {_fit_text(groups, window)};\n{band_note(groups)}", 62)
        lines = max(lines, title.count("\n") + 1)
        _draw_panel(ax, groups, window, ylabel, title)
        ax.legend(loc="best", fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=title_room(fig, lines), wspace=0.3)
    save_figure(fig, path)
    return fig


def write_report(runs, study_dir, *, k, window, test_phase):
    """Every output of the study from the CSV files of `runs` (all finished); returns the summary rows."""
    records, curves, quantities = [], OrderedDict(), {}
    for run in runs:
        record, (q, epochs, values) = run_record(run, study_dir, k)
        quantities[q.column] = q
        val = read_validation(run.run_dir)
        records.append(record)
        curves.setdefault(group_label(run.entry, run.variant), []).append(((epochs, values), val["l1"], val["psnr"]))
    if len(quantities) > 1:
        raise ValueError(f"the runs record different convergence quantities ({', '.join(quantities)}): a study needs "
                         f"one --gan_mode")
    q = next(iter(quantities.values()))
    summary = summarize(records, k)
    labels = OrderedDict()
    for row in summary:
        label = group_label(row["entry"], row["variant"])
        labels[label] = f"{label} (G/D {row['g_over_d']:.1f}, n={row['seeds']})"
    group = lambda index: OrderedDict((labels[e], [c[index] for c in cs]) for e, cs in curves.items())
    seeds = sorted({r["seed"] for r in records})
    convergence_plot(os.path.join(study_dir, "convergence.png"), group(0), q, window, seeds)
    validation_plot(os.path.join(study_dir, "validation.png"), group(1), group(2), window)
    write_rows(os.path.join(study_dir, "per_run.csv"), records)
    main_columns = [c for c in summary[0] if not c.startswith(("diversity", "fidelity", "cross_input", "target_",
                                                                "input_dependence", "n_draws", "n_codes", "n_inputs"))]
    write_rows(os.path.join(study_dir, "summary.csv"), [{c: r[c] for c in main_columns} for r in summary], main_columns)
    segan = [r for r in summary if "diversity_mean" in r]
    if segan:
        write_rows(os.path.join(study_dir, "diversity_summary.csv"),
                   [{c: v for c, v in r.items() if c not in main_columns or c in ("entry", "variant", "seeds")}
                    for r in segan])
    atomic_write_text(os.path.join(study_dir, "summary.md"), markdown(summary, q, k, window, test_phase))
    return summary
