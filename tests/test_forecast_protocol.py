"""data.normalization_fit: train (default) vs whole_recording (the published POCO protocol, leaking)."""

import json
from pathlib import Path

import numpy as np
import yaml

from conftest import forecast_config
from neurocast.data import Recording
from neurocast.data.forecast_data import normalization_protocol, prepare_sessions
from neurocast.schema.forecast import ForecastData


def cfg(**kw):
    return ForecastData(**{"datasets": [{"name": "d", "path": "."}], "context": 12, "horizon": 4,
                           "block_length": 1000, **kw})


def test_whole_recording_fits_on_every_frame_and_train_on_training_frames_only():
    x = np.random.default_rng(0).normal(size=(1000, 3))
    x[600:] += 50.0  # validation/test drift
    rec = Recording(x, 0.5, session="a")
    (train,) = prepare_sessions([("d", [rec], None)], cfg())
    (whole,) = prepare_sessions([("d", [rec], None)], cfg(normalization_fit="whole_recording"))
    np.testing.assert_allclose(train.stats["mean"], x[:600].mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole.stats["mean"], x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole.data.mean(0), 0, atol=1e-4)  # the future shaped the inputs
    np.testing.assert_allclose(whole.data.std(0), 1, atol=1e-4)
    assert train.data[600:].mean() > 40 and abs(whole.data[600:].mean()) < 2
    assert train.pieces == whole.pieces  # same windows, only the statistics differ
    # filters run over the whole recording: an impulse in the validation part reaches training frames
    z = np.zeros((1000, 1))
    z[601, 0] = 100.0
    spec = {"normalization": "none", "filter": {"kind": "lowpass", "high_hz": 0.2}}
    (leak,) = prepare_sessions([("d", [Recording(z, 0.5, session="a")], None)],
                               cfg(normalization_fit="whole_recording", **spec))
    (clean,) = prepare_sessions([("d", [Recording(z, 0.5, session="a")], None)], cfg(**spec))
    assert np.abs(leak.data[590:600]).max() > 0.1 and np.abs(clean.data[:600]).max() == 0
    assert normalization_protocol(cfg())["leaking"] is False
    assert normalization_protocol(cfg(normalization_fit="whole_recording"))["leaking"] is True


def test_leaking_protocol_is_labelled_in_every_summary_and_report(run_cli, tiny_rnn, tmp_path):
    c = forecast_config(tiny_rnn, max_steps=4, val_every=2, seeds=[0])
    c.update(task="forecast_compare", name="leaky")
    c.pop("model")
    c["models"] = {"nlinear": {"kind": "nlinear"}}
    c["data"]["normalization_fit"] = "whole_recording"
    path = tmp_path / "leaky.yaml"
    path.write_text(yaml.safe_dump(c))
    code, out, err = run_cli("train", path, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "LEAKING" in out
    run = Path(out.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["protocol"]["normalization_fit"] == "whole_recording" and summary["protocol"]["leaking"]
    seed = json.loads((run / "models" / "nlinear" / "seeds" / "0" / "summary.json").read_text())
    assert seed["protocol"]["leaking"]
    assert (run / "comparison.md").read_text().startswith("> LEAKING: normalisation, PCA and filters fitted on whole")
    code, out, err = run_cli("summarize", tmp_path / "runs", "--json")
    assert code == 0, err
    (row,) = json.loads(out)["runs"]
    assert row["normalization_fit"] == "whole_recording (LEAKING)"
