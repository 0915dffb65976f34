"""analyze_dw on synthetic histories: Brownian motion vs a smooth drift."""
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    module = importlib.import_module("scripts.analysis.analyze_dw")
    return module


def brownian(rng, epochs, size=8):
    return np.cumsum(rng.normal(0, 0.05, size=(epochs, size, size)), axis=0)


def smooth(rng, epochs, size=8):
    phase = rng.uniform(0, 2 * np.pi, size=(1, size, size))
    t = np.arange(epochs)[:, None, None]
    return 0.5 * np.sin(2 * np.pi * t / 40 + phase)


def write_per_image(directory, series_by_image, which="W"):
    """The layout models/atme_model.py writes: epoch_<EEE>_img_<index>_<W|D>.npy, one (H, W) map each."""
    directory.mkdir(parents=True, exist_ok=True)
    for image, series in series_by_image.items():
        for t, one in enumerate(series, start=1):
            np.save(directory / f"epoch_{t:03d}_img_{image}_{which}.npy", one.astype(np.float32))


def test_brownian_increments_look_independent_and_normal(tmp_path):
    rng = np.random.default_rng(0)
    write_per_image(tmp_path / "run" / "noisy_history", {0: brownian(rng, 80), 7: brownian(rng, 80)})
    summary = load_script().main([str(tmp_path / "run"), "--alpha", "0.01"])
    assert set(summary["images"]) == {"0", "7"}
    for r in summary["images"].values():
        assert r["n_epochs"] == 80 and r["epochs"] == [1, 80]
        assert abs(r["autocorr_lag1"]) < 0.1
        assert r["normality_p"] > 0.01 and not r["normality_rejected"]
        assert r["frac_pixels_non_normal"] < 0.08  # about alpha = 0.01 under normality
    assert (tmp_path / "run" / "noisy_history" / "dw_analysis.png").stat().st_size > 0
    written = json.loads((tmp_path / "run" / "noisy_history" / "dw_analysis.json").read_text())
    assert written["mean_autocorr_lag1"] == pytest.approx(summary["mean_autocorr_lag1"])


def test_smooth_series_has_correlated_non_normal_increments(tmp_path):
    rng = np.random.default_rng(1)
    write_per_image(tmp_path / "noisy_history", {3: smooth(rng, 80)})
    r = load_script().main([str(tmp_path / "noisy_history")])["images"]["3"]
    assert r["autocorr_lag1"] > 0.8
    assert r["normality_p"] < 0.01 and r["normality_rejected"]


def test_stacked_layout_epoch_window_and_D_maps(tmp_path):
    rng = np.random.default_rng(2)
    history = tmp_path / "noisy_history"
    history.mkdir()
    series = brownian(rng, 30)
    for t in range(30):
        np.save(history / f"epoch_{t + 1}_W.npy", np.stack([series[t], series[t] * 2])[:, None])  # (K, 1, H, W)
    write_per_image(history, {5: smooth(rng, 30)}, which="D")
    script = load_script()
    w = script.main([str(history), "--epochs", "11:30"])
    assert set(w["images"]) == {"0", "1"} and w["images"]["0"]["epochs"] == [11, 30]
    # image 1 is image 0 scaled by two: identical correlation structure
    assert w["images"]["1"]["autocorr_lag1"] == pytest.approx(w["images"]["0"]["autocorr_lag1"])
    d = script.main([str(history), "--which", "D", "--out", str(tmp_path / "d.json")])
    assert set(d["images"]) == {"5"} and d["images"]["5"]["autocorr_lag1"] > 0.8


def test_missing_history_and_too_few_epochs_are_explained(tmp_path):
    script = load_script()
    with pytest.raises(FileNotFoundError, match="--n_save_noisy"):
        script.main([str(tmp_path / "nothing")])
    write_per_image(tmp_path / "short" / "noisy_history", {0: brownian(np.random.default_rng(3), 4)})
    with pytest.raises(ValueError, match="at least 5 saved epochs"):
        script.main([str(tmp_path / "short")])


@pytest.mark.parametrize("bad", ["pickled", "not_npy"])
def test_a_map_that_is_not_a_plain_array_is_named_with_a_way_out(tmp_path, bad):
    script = load_script()
    history = tmp_path / "run" / "noisy_history"
    write_per_image(history, {0: brownian(np.random.default_rng(4), 8)})
    odd = history / "epoch_008_img_0_W.npy"
    if bad == "pickled":
        np.save(odd, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    else:
        odd.write_bytes(b"a text file, not an array")
    with pytest.raises(ValueError, match=f"{odd} (holds Python objects|is not a readable .npy).*--epochs"):
        script.main([str(tmp_path / "run")])
    result = script.main([str(tmp_path / "run"), "--epochs", ":7"])  # the way out, as said
    assert result
