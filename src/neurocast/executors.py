"""Run lists of neurocast command lines: locally in parallel processes, on Slurm, on LSF.

Every sweep trial and every fanned-out analysis is one command line; an executor only
decides where it runs:

* local: ``jobs`` processes at once on this machine; one failing command never stops the
  others; returns every exit status;
* slurm: one job array submitted through submitit (partition, GPUs, CPUs, memory, time
  from the sweep config); SIGUSR2 before the time limit lets a trial checkpoint and stop;
* lsf: a ``bsub`` job-array script (one command per array index from ``commands.txt``),
  written into the sweep folder and submitted with ``bsub < script``.

``dry_run`` prints what would run (for clusters: the exact script) and submits nothing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from neurocast.errors import ConfigError, NeurocastError
from neurocast.progress import info, warn


def neurocast_argv(*args: str) -> list[str]:
    """A command line running this neurocast with this Python (works in venvs and on nodes)."""
    return [sys.executable, "-m", "neurocast", "--quiet", *map(str, args)]


def run_local(commands: list[list[str]], names: list[str], log_dir: Path, jobs: int = 1) -> dict[str, int]:
    """Run commands, ``jobs`` at once; returns name -> exit status (logs in log_dir/<name>.log)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = list(zip(names, commands))
    running: dict[str, tuple[subprocess.Popen, Any]] = {}
    done: dict[str, int] = {}
    env = {**os.environ, "NEUROCAST_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    while pending or running:
        while pending and len(running) < jobs:
            name, cmd = pending.pop(0)
            keep_earlier_log(log_dir / f"{name}.log")
            log = open(log_dir / f"{name}.log", "w")
            info(f"start {name}")
            running[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        time.sleep(0.2)
        for name, (proc, log) in list(running.items()):
            code = proc.poll()
            if code is not None:
                log.close()
                done[name] = code
                del running[name]
                (info if code == 0 else warn)(
                    f"{'done' if code == 0 else f'FAILED (exit {code})'}: {name}  (log: {log_dir / name}.log)")
    return done


def keep_earlier_log(path: Path) -> None:
    """Move an earlier attempt's log aside (``<name>.attempt-<k>.log``) so every attempt is kept."""
    if not path.exists():
        return
    k = 1
    while path.with_name(f"{path.stem}.attempt-{k}.log").exists():
        k += 1
    path.rename(path.with_name(f"{path.stem}.attempt-{k}.log"))


def run_command(argv: list[str]) -> int:
    """What a Slurm array task runs (picklable for submitit)."""
    return subprocess.run(argv, check=True).returncode


def slurm_script(commands: list[list[str]], name: str, log_dir: Path, cfg) -> str:
    """The sbatch array script submitit submits for these commands."""
    from submitit.slurm.slurm import _make_sbatch_string

    return _make_sbatch_string(
        command=f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(log_dir))}",
        folder=str(log_dir),
        job_name=name,
        partition=cfg.partition,
        time=cfg.time_min,
        cpus_per_task=cfg.cpus_per_task,
        gpus_per_node=cfg.gpus_per_node or None,
        mem=f"{int(cfg.mem_gb)}GB",
        account=cfg.account,
        qos=cfg.qos,
        setup=list(cfg.setup),
        map_count=len(commands),
        array_parallelism=cfg.array_parallelism,
        additional_parameters=dict(cfg.extra) or None,
    )


def submit_slurm(commands: list[list[str]], name: str, log_dir: Path, cfg, dry_run: bool) -> str:
    try:
        import submitit
    except ImportError:
        raise ConfigError("the slurm executor needs submitit: pip install submitit (or neurocast[slurm])") from None
    log_dir.mkdir(parents=True, exist_ok=True)
    script = slurm_script(commands, name, log_dir, cfg)
    (log_dir / "sbatch_array.sh").write_text(script)
    if dry_run:
        return script
    if shutil.which("sbatch") is None:
        raise NeurocastError("sbatch not found: submit from a Slurm login node (or use --dry-run)")
    ex = submitit.SlurmExecutor(folder=str(log_dir))
    params = dict(partition=cfg.partition, time=cfg.time_min, cpus_per_task=cfg.cpus_per_task,
                  mem=f"{int(cfg.mem_gb)}GB", array_parallelism=cfg.array_parallelism, setup=list(cfg.setup),
                  job_name=name)
    if cfg.gpus_per_node:
        params["gpus_per_node"] = cfg.gpus_per_node
    for key in ("account", "qos"):
        if getattr(cfg, key):
            params[key] = getattr(cfg, key)
    if cfg.extra:
        params["additional_parameters"] = dict(cfg.extra)
    ex.update_parameters(**params)
    jobs = ex.map_array(run_command, commands)
    more = f" (+{len(jobs) - 1} tasks)" if len(jobs) > 1 else ""
    return "submitted Slurm array: " + ", ".join(j.job_id for j in jobs[:1]) + more


def lsf_script(commands_file: Path, n: int, name: str, log_dir: Path, cfg) -> str:
    hours, minutes = divmod(cfg.time_min, 60)
    lines = [
        "#!/bin/bash",
        f'#BSUB -J "{name}[1-{n}]%{cfg.parallelism}"',
        f"#BSUB -n {cfg.cpus}",
        f'#BSUB -R "rusage[mem={int(cfg.mem_gb * 1024)}]"',
        f"#BSUB -W {hours:02d}:{minutes:02d}",
        f"#BSUB -o {log_dir}/%J_%I.out",
        f"#BSUB -e {log_dir}/%J_%I.err",
    ]
    if cfg.queue:
        lines.append(f"#BSUB -q {cfg.queue}")
    if cfg.gpus:
        lines.append(f'#BSUB -gpu "num={cfg.gpus}"')
    lines += [f"#BSUB {e}" for e in cfg.extra]
    lines += ["set -euo pipefail", *cfg.setup, f"cd {shlex.quote(os.getcwd())}",
              f'CMD=$(sed -n "${{LSB_JOBINDEX}}p" {shlex.quote(str(commands_file))})', 'eval "$CMD"', ""]
    return "\n".join(lines)


def submit_lsf(commands: list[list[str]], name: str, folder: Path, cfg, dry_run: bool) -> str:
    log_dir = folder / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    commands_file = folder / "commands.txt"
    commands_file.write_text("".join(shlex.join(c) + "\n" for c in commands))
    script = lsf_script(commands_file, len(commands), name, log_dir, cfg)
    path = folder / "lsf_array.sh"
    path.write_text(script)
    if dry_run:
        return script
    if shutil.which("bsub") is None:
        raise NeurocastError("bsub not found: submit from an LSF login node (or use --dry-run)")
    with open(path) as f:
        out = subprocess.run(["bsub"], stdin=f, capture_output=True, text=True)
    if out.returncode != 0:
        raise NeurocastError(f"bsub failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout.strip()
