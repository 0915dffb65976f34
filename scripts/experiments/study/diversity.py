"""SEGAN's claim, measured per run: how much the outputs vary with the code, how close they stay to the target, and
how much they depend on the input (`<study_dir>/eval/<run>/diversity.csv`, one row per draw of codes).

For draw d, `--n_codes` codes are drawn from N(0, I) with seed d (the same codes for every run, so runs with and
without the MI term are compared on identical codes), and every one of the first `--diversity_inputs` test inputs
is translated with each. All distances use one metric on the outputs as their 8-bit PNGs would hold them:
LPIPS when its backbone weights are present, else the labelled L1 fallback on the [0, 1] image scale.

- diversity: mean distance between the outputs of one input under two codes (averaged over pairs and inputs);
- fidelity: mean distance between an output and its input's target (over codes and inputs);
- cross_input: mean distance between the outputs of two inputs under one code (over pairs and codes);
- target_distance: mean distance between the targets of two inputs.

A generator that maps each code to one picture whatever the input has a high diversity and a cross_input far
below target_distance; cross_input / target_distance near 1 means the outputs differ across inputs as much as
the targets do.
"""
import logging

import torch

from scripts.experiments.study.records import is_current, write_rows
from scripts.experiments.study.trained_model import open_test_model
from scripts.eval.pairwise_distances import (L1_LABEL, L1_SCALE, as_saved_pixels, l1_distance, lpips_distance,
                                             mean_pairwise_distance)

log = logging.getLogger("convergence_study")

LPIPS_SCALE = "LPIPS (alex, v0.1) of [0, 1] images given to it on its [-1, 1] scale"


def diversity_metric(backbone_weights=None):
    """(name, scale, distance on [0, 1] images, device-agnostic): LPIPS when its backbone weights are present
    (given, or in torch.hub's cache; nothing is downloaded), else the L1 fallback."""
    try:
        from scripts.eval.diversity import build_lpips
        metric = build_lpips("alex", backbone_weights=backbone_weights, download=False)
    except (ImportError, RuntimeError, FileNotFoundError) as err:
        if backbone_weights:
            raise
        log.info("LPIPS is not available (%s); SEGAN diversity uses the L1 fallback on the %s",
                 str(err).split(":")[0], L1_SCALE)
        return L1_LABEL, L1_SCALE, None
    return "lpips-alex-v0.1", LPIPS_SCALE, metric


def _on_uint8(distance):
    """A distance on [0, 1] images, applied to the uint8 pixels the outputs are kept as."""
    return lambda x, y: distance(x.float() / 255.0, y.float() / 255.0)


def _generate(model, inputs, code, batch_size):
    """The outputs of `inputs` under one code, as uint8 pixels on the CPU."""
    outputs = []
    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start:start + batch_size]
        codes = code.to(batch.device).expand(batch.shape[0], -1)
        outputs.append((as_saved_pixels(model.netG(batch, codes)) * 255).round().to(torch.uint8).cpu())
    return torch.cat(outputs)


@torch.no_grad()
def code_draws(model, loader, distance, *, n_draws, n_codes, max_inputs, batch_size=8, seed=0):
    """One dict per draw: diversity, fidelity, cross_input and target_distance (see the module's docstring)."""
    if n_codes < 2 or n_draws < 1:
        raise ValueError(f"--n_codes must be at least 2 and --n_draws at least 1, got {n_codes} and {n_draws}")
    inputs, targets = [], []
    for batch in loader:
        model.set_input(batch)
        inputs.append(model.real_A)
        targets.append(model.real_B)
        if sum(len(t) for t in inputs) >= max_inputs:
            break
    inputs = torch.cat(inputs)[:max_inputs]
    targets = (as_saved_pixels(torch.cat(targets)[:max_inputs]) * 255).round().to(torch.uint8).cpu()
    if inputs.shape[0] < 2:
        raise ValueError(f"input dependence needs at least 2 test inputs, got {inputs.shape[0]}")
    on_pixels = _on_uint8(distance)
    target_distance = mean_pairwise_distance(targets, on_pixels)
    rows = []
    for draw in range(n_draws):
        codes = torch.randn(n_codes, model.nz, generator=torch.Generator().manual_seed(seed + draw))
        outputs = torch.stack([_generate(model, inputs, code, batch_size) for code in codes])  # (K, N, C, H, W)
        count = inputs.shape[0]
        rows.append(dict(
            draw=draw, code_seed=seed + draw, n_inputs=count, n_codes=n_codes,
            diversity=sum(mean_pairwise_distance(outputs[:, i], on_pixels) for i in range(count)) / count,
            fidelity=sum(float(on_pixels(outputs[k], targets).double().mean()) for k in range(n_codes)) / n_codes,
            cross_input=sum(mean_pairwise_distance(outputs[k], on_pixels) for k in range(n_codes)) / n_codes,
            target_distance=target_distance))
    return rows


def evaluate_diversity(run, epoch, config, path):
    """Write `path` (diversity.csv) for a SEGAN run unless it already holds this epoch with these settings."""
    name, scale, metric = config.diversity_metric
    settings = dict(metric=name, n_draws=config.n_draws, n_codes=config.n_codes,
                    max_inputs=config.diversity_inputs, phase=config.test_phase)
    if is_current(path, epoch, **settings):
        return
    model, loader = open_test_model(run, dataroot=config.test_dataroot, phase=config.test_phase,
                                    gpu_ids=config.gpu_ids, results_dir=config.results_dir)
    distance = l1_distance if metric is None else lpips_distance(metric.to(model.device))
    rows = code_draws(model, loader, distance, n_draws=config.n_draws, n_codes=config.n_codes,
                      max_inputs=config.diversity_inputs)
    write_rows(path, [{"epoch": epoch, **settings, "scale": scale, **row} for row in rows])
    mean = sum(r["diversity"] for r in rows) / len(rows)
    log.info("%s: diversity %.4f (%s, %s) over %d draws of %d codes", run.name, mean, name, scale, len(rows),
             config.n_codes)
