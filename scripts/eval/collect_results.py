"""Gather the kid.json files of many runs into the layout of the ATME paper's Table 2 (Markdown and CSV).

    python -m scripts.eval.collect_results results/ --out_md kid_table.md --out_csv kid_table.csv [--paper]

Each kid.json (written by scripts/eval/compute_kid.py) names its dataset, model and direction, either as fields
(recorded from the run's stored options or given with --tag) or through a run name `<dataset>_<model>_<AtoB|BtoA>`
as the per-dataset scripts use. Rows are models, columns dataset x direction; cells are KID x100 mean +- std,
the lowest mean per column in bold.
"""
import argparse
import csv
import io
import json
import logging
import os
import re
import sys

if not __package__:  # run as `python scripts/eval/collect_results.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

log = logging.getLogger("collect_results")

DATASET_ORDER = ("facades", "maps", "cityscapes", "night2day")
MODEL_ORDER = ("pix2pix", "atme", "segan")
DISPLAY = {"facades": "Facades", "maps": "Maps", "cityscapes": "Cityscapes", "night2day": "Night2day",
           "pix2pix": "pix2pix", "atme": "ATME", "segan": "SEGAN"}
ARROWS = {"AtoB": "A→B", "BtoA": "B→A"}
NAME_PATTERN = re.compile(r"^(?P<dataset>.+)_(?P<model>[^_]+)_(?P<direction>AtoB|BtoA)$")

# ATME paper, Table 2 (KID x100), for side-by-side comparison with --paper.
PAPER_TABLE2 = {
    "pix2pix": {("facades", "AtoB"): (31.3, 2.3), ("facades", "BtoA"): (11.0, 0.7),
                ("maps", "AtoB"): (25.7, 2.0), ("maps", "BtoA"): (19.0, 1.8),
                ("cityscapes", "AtoB"): (16.0, 0.8), ("cityscapes", "BtoA"): (7.8, 1.0),
                ("night2day", "AtoB"): (19.2, 1.6), ("night2day", "BtoA"): (11.6, 1.1)},
    "atme": {("facades", "AtoB"): (18.4, 1.8), ("facades", "BtoA"): (9.4, 0.7),
             ("maps", "AtoB"): (2.8, 0.6), ("maps", "BtoA"): (2.8, 0.7),
             ("cityscapes", "AtoB"): (6.5, 1.0), ("cityscapes", "BtoA"): (5.7, 0.8),
             ("night2day", "AtoB"): (19.7, 2.1), ("night2day", "BtoA"): (18.3, 1.4)},
}


def find_kid_files(paths):
    files = []
    for path in paths:
        if os.path.isfile(path):
            files.append(path)
        elif os.path.isdir(path):
            for root, _, names in os.walk(path):
                files.extend(os.path.join(root, n) for n in names if n == "kid.json")
        else:
            raise FileNotFoundError(f"{path} is neither a kid.json file nor a folder")
    return sorted(files)


def describe(record, path):
    """(dataset, model, direction) of one kid.json record."""
    fields = {k: record.get(k) for k in ("dataset", "model", "direction")}
    match = NAME_PATTERN.match(str(record.get("name", "")))
    if match:
        for key in fields:
            fields[key] = fields[key] or match.group(key)
    missing = [k for k, v in fields.items() if not v]
    if missing:
        raise ValueError(f"{path} does not say its {', '.join(missing)}: name the run <dataset>_<model>_<direction> "
                         "or rerun compute_kid.py with --tag dataset=... --tag model=... --tag direction=...")
    if fields["direction"] not in ARROWS:
        raise ValueError(f"{path}: direction must be AtoB or BtoA, got {fields['direction']!r}")
    return fields["dataset"].lower(), fields["model"].lower(), fields["direction"]


def collect(files):
    """{model: {(dataset, direction): (mean, std)}} from kid.json files; a later file wins a duplicate."""
    table, origin = {}, {}
    for path in sorted(files, key=os.path.getmtime):
        with open(path) as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON ({err})") from None
        if "kid_x100_mean" not in record:
            raise ValueError(f"{path} has no kid_x100_mean: is it a scripts/eval/compute_kid.py output?")
        dataset, model, direction = describe(record, path)
        key = (dataset, direction)
        if key in table.get(model, {}):
            log.warning("%s %s %s: %s replaces %s (newer)", model, dataset, direction, path, origin[model, key])
        table.setdefault(model, {})[key] = (float(record["kid_x100_mean"]), float(record["kid_x100_std"]))
        origin[model, key] = path
    return table


def _ordered(values, order):
    return [v for v in order if v in values] + sorted(v for v in values if v not in order)


def build_rows(table, paper=False):
    """Column keys and rows [(label, {column: (mean, std)})] in Table 2 order."""
    datasets = {d for cells in table.values() for d, _ in cells}
    if paper:
        datasets |= {d for cells in PAPER_TABLE2.values() for d, _ in cells}
    datasets = _ordered(datasets, DATASET_ORDER)
    columns = [(d, direction) for d in datasets for direction in ("AtoB", "BtoA")]
    rows = [(DISPLAY.get(m, m), table[m]) for m in _ordered(table, MODEL_ORDER)]
    if paper:
        rows += [(f"{DISPLAY[m]} (paper)", {k: v for k, v in cells.items() if k in columns})
                 for m, cells in PAPER_TABLE2.items()]
    return columns, rows


def to_markdown(columns, rows):
    header = ["Model"] + [f"{DISPLAY.get(d, d)} {ARROWS[r]}" for d, r in columns]
    measured = [cells for label, cells in rows if not label.endswith("(paper)")]
    best = {}
    for column in columns:
        means = [cells[column][0] for cells in measured if column in cells]
        if len(means) > 1:
            best[column] = min(means)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, cells in rows:
        out = [label]
        for column in columns:
            if column not in cells:
                out.append("–")
                continue
            mean, std = cells[column]
            text = f"{mean:.1f} ± {std:.1f}"
            bold = not label.endswith("(paper)") and best.get(column) == mean
            out.append(f"**{text}**" if bold else text)
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines) + "\n\nKID x100 (mean ± std over subsets; lower is better).\n"


def to_csv(columns, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["model"]
    for d, r in columns:
        header += [f"{d}_{r}_kid_x100_mean", f"{d}_{r}_kid_x100_std"]
    writer.writerow(header)
    for label, cells in rows:
        row = [label]
        for column in columns:
            mean, std = cells.get(column, ("", ""))
            row += [mean, std]
        writer.writerow(row)
    return buffer.getvalue()


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", default=["results"], help="kid.json files or folders searched for them")
    p.add_argument("--out_md", default=None, help="write the Markdown table here (default: print it)")
    p.add_argument("--out_csv", default=None, help="write the CSV table here")
    p.add_argument("--paper", action="store_true", help="add the paper's pix2pix and ATME rows for comparison")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    files = find_kid_files(args.paths)
    if not files:
        raise FileNotFoundError(f"no kid.json under {', '.join(args.paths)}: run scripts/eval/compute_kid.py first")
    columns, rows = build_rows(collect(files), paper=args.paper)
    markdown, table_csv = to_markdown(columns, rows), to_csv(columns, rows)
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write(markdown)
    else:
        sys.stdout.write(markdown)
    if args.out_csv:
        with open(args.out_csv, "w") as f:
            f.write(table_csv)
    log.info("%d kid.json files -> %d rows x %d columns", len(files), len(rows), len(columns))
    return columns, rows


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: main() and 0)  # one-line errors for users; main() returns its results for tests
