import json
from pathlib import Path

import yaml

from conftest import latent_config


def _config(tmp_path, tiny_fly):
    cfg = latent_config(tiny_fly, epochs=1, validation_windows=16)
    cfg["training"].update(time_units=2, evolve_multiple_steps=1, batch_size=64)
    cfg["data"]["split"]["train_end"] = 2000
    cfg["data"]["split"]["validation_start"] = 8000
    cfg["data"]["split"]["validation_end"] = 8600
    cfg["data"]["cross_validation"] = []
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_grid_with_seeds_creates_one_run_per_trial_with_its_overrides(tiny_fly, tmp_path, run_cli):
    exp = _config(tmp_path, tiny_fly)
    code, out, err = run_cli(
        "sweep", exp, "--grid", "training.unconnected_to_zero.num_neurons=0,20",
        "--grid", "training.unconnected-to-zero.loss-coeff=0.01,0.1", "--seeds", "2", "--jobs", "2",
        "--runs-dir", tmp_path / "runs", "--name", "aug",
    )
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    trials = json.loads((folder / "sweep.json").read_text())["trials"]
    assert len(trials) == 8
    runs = sorted((folder / "trials").iterdir())
    assert len(runs) == 8
    seen = set()
    for t in trials:
        cfg = yaml.safe_load((folder / "trials" / t["name"] / "config.yaml").read_text())
        aug = cfg["training"]["unconnected_to_zero"]
        assert aug["num_neurons"] == t["params"]["training.unconnected_to_zero.num_neurons"]
        assert aug["loss_coeff"] == t["params"]["training.unconnected_to_zero.loss_coeff"]
        assert cfg["training"]["seed"] == t["seed"]
        assert (folder / "trials" / t["name"] / "status").read_text().strip() == "complete"
        seen.add((aug["num_neurons"], aug["loss_coeff"], cfg["training"]["seed"]))
    assert len(seen) == 8

    # summarize shows exactly the varied keys
    code, out, err = run_cli("summarize", folder, "--json")
    assert code == 0, err
    table = json.loads(out)
    assert sorted(table["varied"]) == ["training.seed", "training.unconnected_to_zero.loss_coeff",
                                       "training.unconnected_to_zero.num_neurons"]
    assert len(table["runs"]) == 8 and all(r["best_val_loss"] is not None for r in table["runs"])
    assert (folder / "summary.csv").exists() and (folder / "summary_plots.png").exists()
    code, out, err = run_cli("summarize", folder, "--sort", "best_val_loss")
    assert code == 0 and "training.seed" in out.splitlines()[0]

    # re-running skips every finished trial
    code, out, err = run_cli(
        "sweep", exp, "--grid", "training.unconnected_to_zero.num_neurons=0,20",
        "--grid", "training.unconnected-to-zero.loss-coeff=0.01,0.1", "--seeds", "2",
        "--runs-dir", tmp_path / "runs", "--name", "aug", "--dry-run",
    )
    assert code == 0 and "nothing to run: every trial is complete" in out


def test_a_failing_trial_is_reported_and_the_rest_finish_then_retried(tiny_fly, tmp_path, run_cli):
    exp = _config(tmp_path, tiny_fly)
    args = ["sweep", exp, "--grid", "training.optimizer=Adam,NoSuchOptimizer", "--runs-dir", tmp_path / "runs",
            "--name", "bad", "--jobs", "2"]
    code, out, err = run_cli(*args)
    assert code == 1
    folder = Path(out.strip().splitlines()[-1])
    status = {p.name: (p / "status").read_text().strip() for p in (folder / "trials").iterdir()
              if (p / "status").exists()}
    good = next(n for n in status if "Adam" in n and "NoSuch" not in n)
    assert status[good] == "complete"
    assert "1 trial(s) failed" in err and "NoSuchOptimizer" in err
    log = next((folder / "logs").glob("*NoSuch*.log")).read_text()
    assert "is not a torch.optim optimizer" in log
    # a re-run leaves the complete trial alone and retries the failed one, keeping the failed attempt
    code, out, err = run_cli(*args)
    assert code == 1
    names = sorted(p.name for p in (folder / "trials").iterdir())
    assert any(".failed-1" in n for n in names)
    assert "start t000" not in err  # the complete trial did not run again
    logs = sorted(p.name for p in (folder / "logs").glob("*NoSuch*"))
    assert len(logs) == 2 and any(".attempt-1.log" in n for n in logs)  # every attempt's log is kept


def test_cluster_executors_write_correct_scripts_in_dry_run(tiny_fly, tmp_path, run_cli):
    exp = _config(tmp_path, tiny_fly)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "task": "sweep", "name": "cl", "experiment": str(exp), "runs_dir": str(tmp_path / "runs"),
        "grid": {"training.learning_rate": [0.001, 0.01]}, "seeds": 2,
        "slurm": {"partition": "gpu", "gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 32, "time_min": 90,
                  "setup": ["source .venv/bin/activate"]},
        "lsf": {"queue": "gpu_a100", "gpus": 1, "cpus": 4, "mem_gb": 32, "time_min": 90},
    }))
    code, out, err = run_cli("sweep", sweep, "--executor", "slurm", "--dry-run")
    assert code == 0, err
    for line in ("#SBATCH --array=0-3%4", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=32GB", "#SBATCH --time=90", "source .venv/bin/activate",
                 "submitit.core._submit"):
        assert line in out, line
    code, out, err = run_cli("sweep", sweep, "--executor", "lsf", "--dry-run")
    assert code == 0, err
    for line in ('#BSUB -J "cl[1-4]%64"', "#BSUB -q gpu_a100", '#BSUB -gpu "num=1"', "#BSUB -n 4",
                 '#BSUB -R "rusage[mem=32768]"', "#BSUB -W 01:30", 'sed -n "${LSB_JOBINDEX}p"'):
        assert line in out, line
    folder = Path(out.strip().splitlines()[-1])
    commands = (folder / "commands.txt").read_text().strip().splitlines()
    assert len(commands) == 4 and all(" train " in c and "--run-dir" in c for c in commands)
    assert any("--training.learning_rate 0.01" in c and "--training.seed 1" in c for c in commands)
    assert not (folder / "trials").exists() or not any((folder / "trials").iterdir())  # nothing ran


def test_experiments_and_run_by_name(tmp_path, run_cli, tiny_fly, monkeypatch):
    code, out, err = run_cli("experiments")
    assert code == 0
    for name in ("latent_20step", "poco_celegans", "compare_ttt_methods", "sim/fly_small", "fomaml_test"):
        assert name in out
    mine = tmp_path / "presets"
    mine.mkdir()
    cfg = yaml.safe_load(_config(tmp_path, tiny_fly).read_text())
    cfg.update(name="my_exp", description="my own experiment", runs_dir=str(tmp_path / "runs"))
    (mine / "my_exp.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = run_cli("experiments", "--presets-dir", mine)
    assert "my_exp" in out and "my own experiment" in out
    code, out, err = run_cli("run", "my_exp", "--presets-dir", mine, "--training.epochs", "1")
    assert code == 0, err
    assert Path(out.strip().splitlines()[-1]).parent == tmp_path / "runs" / "my_exp"
    code, out, err = run_cli("run", "latent_20stp")
    assert code == 2 and "did you mean 'latent_20step'" in err


def test_analysis_fans_out_over_a_sweep(tiny_fly, tmp_path, run_cli):
    exp = _config(tmp_path, tiny_fly)
    code, out, err = run_cli("sweep", exp, "--grid", "training.learning_rate=0.001,0.002",
                             "--runs-dir", tmp_path / "runs", "--name", "an",
                             "--training.save-checkpoint-every-n-epochs", "1")
    assert code == 0, err
    folder = Path(out.strip().splitlines()[-1])
    code, out, err = run_cli("analyze", folder, "--epochs", "1,final", "--horizon", "40", "--starts", "2", "--jobs",
                             "2")
    assert code == 0, err
    for trial in (folder / "trials").iterdir():
        assert (trial / "analysis" / "epoch_0001" / "metrics.json").exists()
        assert (trial / "analysis" / "final" / "metrics.json").exists()
        assert (trial / "analysis" / "epochs.csv").exists()
    code, out, err = run_cli("analyze", folder, "--epoch", "final", "--executor", "lsf", "--dry-run")
    assert code == 0 and "#BSUB" in out and out.count(" analyze ") >= 2


def test_summary_table_fits_the_terminal_and_plots_runs_that_are_not_a_grid(tmp_path):
    from neurocast.summarize import is_grid, plot, readable_table, short_names

    varied = ["training.unconnected_to_zero.num_neurons", "training.seed", "training.acquisition_mode.seed"]
    assert short_names(varied) == {varied[0]: "num_neurons", varied[1]: "training.seed",
                                   varied[2]: "acquisition_mode.seed"}
    table = [{"run": f"experiment_{i}/seed{i % 2}", varied[0]: 10 * i, varied[1]: i % 2, varied[2]: 42,
              "status": "diverged" if i == 2 else "complete", "val/pn_in_vs_linear": 0.8 + 0.1 * i} for i in range(4)]
    text = readable_table(table, varied, ["status", "val/pn_in_vs_linear"], width=60)
    assert all(len(line) <= 60 for line in text.splitlines() if not line.startswith("  "))
    assert "num_neurons = training.unconnected_to_zero.num_neurons" in text and "diverged" in text
    assert text.count("experiment_3/seed1") >= 2  # several blocks, each with the run column
    assert not is_grid(table, varied[:2])  # 4 runs, 4 x 2 combinations
    assert plot(table, varied[:2], ["val/pn_in_vs_linear"], tmp_path / "p.png").exists()
