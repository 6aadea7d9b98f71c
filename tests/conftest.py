import os

# Tests check behaviour, not speed: one thread each (here and in the CLI subprocesses they
# start; set before numpy and torch load their thread pools). The suite's arrays are small,
# and on a busy 2-core machine several threads per process spin against each other (a 0.7 s
# simulation took 90 s with two).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NEUROCAST_QUIET", "1")

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEUROCAST_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test (with the reason) where it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} (set NEUROCAST_SHARED_DATA to its folder)")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from neurocast.cli import main

    def _run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


TINY_FLY = {
    "task": "fly_simulation",
    "name": "tiny_fly",
    "network": {"extent": 1},  # neurocast's trained parameters (the default)
    "dynamics": {"dt": 0.02, "noise_std": 0.01, "warmup_s": 0.5},
    "batch": 4,
    "recordings": {
        "train": {"duration_s": 50.0, "sequences": 4, "seed": 1,
                  "stimulus": {"families": {"natural": 1.0}, "segment_s": [1.0, 3.0], "seed": 1}},
        "cv": {"duration_s": 30.0, "sequences": 1, "noise_std": 0.0, "seed": 2,
               "stimulus": {"families": {"moving_edges": 1.0, "gratings": 1.0}, "seed": 2}},
    },
}


@pytest.fixture(scope="session")
def tiny_fly(tmp_path_factory):
    """A small simulated fly dataset (extent 1: 443 cells, 10,000 training frames)."""
    from neurocast.sim.fly_simulation import simulate_fly
    from neurocast.tasks import load_task_config

    return simulate_fly(load_task_config(TINY_FLY), tmp_path_factory.mktemp("data") / "tiny_fly")


def latent_config(dataset, **training):
    """A small latent experiment config (dict) on a dataset folder."""
    cfg = {
        "task": "latent",
        "name": "test_latent",
        "data": {
            "path": str(dataset),
            "split": {"train_start": 0, "train_end": 4000, "validation_start": 8000, "validation_end": 10000},
            "cross_validation": [{"recording": "cv", "name": "motion"}],
        },
        "model": {
            "latent_dims": 32,
            "encoder": {"num_hidden_units": 64},
            "decoder": {"num_hidden_units": 64},
            "evolver": {"num_hidden_units": 64},
            "stimulus_encoder": {"num_hidden_units": 16, "num_output_dims": 8},
        },
        "training": {"time_units": 5, "evolve_multiple_steps": 2, "epochs": 2, "batch_size": 64,
                     "learning_rate": 2e-3, "validation_windows": 64, "seed": 3, **training},
        "logging": {"tensorboard": False},
    }
    return cfg


TINY_RNN = {
    "task": "rnn_simulation", "name": "tiny_rnn", "n_units": 60, "n_sessions": 5, "observed_units": 24,
    "connectivity_noise": 0.3, "duration_s": 60.0, "downsample": 5, "seed": 1,
}


@pytest.fixture(scope="session")
def tiny_rnn(tmp_path_factory):
    """Five simulated sessions of 24 observed units, 1,200 frames each."""
    from neurocast.sim.rnn_sessions import simulate_rnn
    from neurocast.tasks import load_task_config

    return simulate_rnn(load_task_config(TINY_RNN), tmp_path_factory.mktemp("data") / "tiny_rnn")


def forecast_config(dataset, **training):
    """A small forecasting config (dict) on a dataset folder."""
    return {
        "task": "forecast",
        "name": "test_forecast",
        "data": {"datasets": [{"name": "rnn", "path": str(dataset)}], "context": 16, "horizon": 4,
                 "block_length": 600},
        "model": {"kind": "poco", "token_length": 4, "hidden": 32, "heads": 2, "head_dim": 16,
                  "conditioning_dim": 64},
        "training": {"max_steps": 20, "val_every": 10, "batch_size": 16, "val_windows": 32, **training},
        "eval": {"adaptation": {"steps": 6, "eval_every": 3, "long_steps": 8, "budgets": [10], "query_windows": 32,
                                "batch_size": 16, "scratch_steps": 4}},
        "logging": {"tensorboard": False},
    }
