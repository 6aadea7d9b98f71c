"""Run directories: one per run, never overwritten.

Layout::

    <runs_dir>/<experiment>/<YYYYmmdd-HHMMSS>_<git-short>_<config-hash>[-k]/
        config.yaml      the resolved config (what the run actually used)
        env.json         package versions, git commit and dirty flag, host, device, seed, argv
        metrics.jsonl    one JSON object per logged event
        status           running | complete | failed | terminated
        .lock            held (fcntl.flock) by the one process writing the run: host, pid, command
        summary.json     final numbers (written by the trainer)
        checkpoints/     atomic checkpoints (see neurocast.checkpoints)
        figures/         PNG figures
    <runs_dir>/<experiment>/latest -> the newest run directory (relative link)

Two runs started in the same second with the same config get distinct directories
(``-1``, ``-2`` ... suffixes, created with an exclusive mkdir).

One writer per run: the process that creates or resumes a run holds an OS lock on its
``.lock`` file until it finishes or dies (see :mod:`neurocast.locks`); a second writer
(``train --resume`` on a run that is still training, a sweep restarting a live trial)
fails with one line naming the holder. Temporary files left by a killed writer
(``.<name>.tmp-<pid>``) are removed when the next writer takes the run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from neurocast.atomic import replaced_atomically
from neurocast.errors import RunError, environment_errors
from neurocast.locks import FileLock, holder, release_under

STATUSES = ("running", "complete", "failed", "terminated")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@lru_cache(maxsize=1)
def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the neurocast source tree ({'commit': 'nogit'} outside git)."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "nogit", "dirty": None}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("neurocast", "torch", "numpy", "scipy", "pydantic", "zarr", "h5py", "flyvis"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def device_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
    except Exception:  # torch missing or broken CUDA: report CPU
        pass
    return f"cpu ({os.cpu_count()} cores)"


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """Replace NaN/Inf floats by None so the JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically (temp file + rename); an environment failure (disk full,
    read-only, permission) is a one-line StorageError naming the file."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    write_text_atomic(path, json.dumps(_finite(data), indent=2, default=_json_default) + "\n")


def read_json(path: Path, what: str = "file") -> Any:
    """JSON from a file; a damaged file is a one-line RunError naming it."""
    try:
        with environment_errors(path, "read"):
            return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunError(f"{what} {path} is damaged (not valid JSON: {str(exc).splitlines()[0]})") from None


def read_yaml_mapping(path: Path, what: str = "config") -> dict[str, Any]:
    """A YAML mapping from a file; a damaged file is a one-line RunError naming it."""
    import yaml

    from neurocast.config import describe_yaml_error

    try:
        with environment_errors(path, "read"):
            data = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunError(f"{what} {path} is damaged ({describe_yaml_error(exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RunError(f"{what} {path} is damaged (expected a mapping of keys, got {type(data).__name__})")
    return data


class RunDir:
    """An existing run directory and the files in it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    # open / create
    @classmethod
    def new(cls, path: str | os.PathLike | None, cfg, config_yaml: str | None = None, *, seed: int | None = None,
            extra_env: dict[str, Any] | None = None) -> "RunDir":
        """A new run directory for the experiment config ``cfg``: exactly ``path`` when given (sweeps,
        ``--run-dir``: a new or empty folder), else a new one under ``cfg.runs_dir/cfg.name`` named by
        time, commit and the hash of ``cfg``. It holds ``config_yaml`` (default: ``cfg`` itself)."""
        from neurocast.config import config_hash, to_yaml

        text = to_yaml(cfg) if config_yaml is None else config_yaml
        if path is None:
            return cls.create(cfg.runs_dir, cfg.name, text, config_hash(cfg), seed=seed, extra_env=extra_env)
        return cls.create_at(path, text, seed=seed, extra_env=extra_env)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        run = cls(Path(path).expanduser())
        if not run.path.is_dir():
            raise RunError(f"run directory {run.path} does not exist")
        if not run.config_path.is_file():
            raise RunError(f"{run.path} is not a run directory (no config.yaml)")
        return run

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def claim(self) -> "RunDir":
        """Become the run's only writer (held until :meth:`release` or the process ends).

        Fails with a one-line LockedError naming the holder when another live process has
        the run; removes temporary files a killed writer left behind."""
        FileLock(self.lock_path, f"run {self.path}").acquire()
        for folder in (self.path, self.checkpoints):
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                if f.name.startswith(".") and ".tmp" in f.name and (f.is_file() or f.is_symlink()):
                    f.unlink(missing_ok=True)
        return self

    def claim_for_resume(self) -> "RunDir":
        """:meth:`claim` a run to continue it; a complete run is refused (checked again once
        the lock is held: the previous writer may have finished meanwhile)."""
        for attempt in (0, 1):
            if self.status == "complete":
                if attempt:
                    self.release()
                raise RunError(f"{self.path} is already complete; start a new run instead")
            if not attempt:
                self.claim()
        return self

    @classmethod
    @contextmanager
    def resuming(cls, path: str | os.PathLike):
        """``with RunDir.resuming(path) as (run, cfg):`` the run at ``path``, claimed for resuming
        (:meth:`claim_for_resume`: the only writer from here on, a complete run refused), with its
        validated config; released on leaving the block, however it is left."""
        run = cls.open(path)
        cfg = run.load_config()
        run.claim_for_resume()
        try:
            yield run, cfg
        finally:
            run.release()

    def release(self) -> None:
        """Give up this run (and every nested run this process holds)."""
        release_under(self.path)

    def holder(self) -> dict[str, Any] | None:
        """The live process writing this run (host, pid, command), or None."""
        return holder(self.lock_path)

    @property
    def live_status(self) -> str | None:
        """The status, with 'running' runs whose writer is gone shown as 'interrupted'."""
        st = self.status
        if st == "running" and self.holder() is None:
            return "interrupted"
        return st

    def read_config(self) -> dict[str, Any]:
        """The run's config.yaml as a mapping (a damaged file is a one-line error naming it)."""
        return read_yaml_mapping(self.config_path, "run config")

    def load_config(self):
        """The run's config validated into its task's schema (the config the run used)."""
        from neurocast.config import validate
        from neurocast.tasks import task_schema

        data = self.read_config()
        return validate(task_schema(data.get("task")), data, f"config {self.config_path}")

    def best_checkpoint(self, fallback: str = "final.pt") -> Path:
        """``checkpoints/best.pt`` (best validation), or ``fallback`` in the same folder when there is none."""
        best = self.checkpoints / "best.pt"
        return best if best.exists() else self.checkpoints / fallback

    @classmethod
    def create(
        cls,
        runs_dir: str | os.PathLike,
        experiment: str,
        config_yaml: str,
        config_digest: str,
        *,
        seed: int | None = None,
        extra_env: dict[str, Any] | None = None,
    ) -> "RunDir":
        """A new, empty run directory under ``runs_dir/experiment`` (never an existing one)."""
        if not _NAME_RE.match(experiment):
            raise RunError(
                f"experiment name {experiment!r} must start with a letter or digit and contain only "
                "letters, digits and _ . + -"
            )
        parent = Path(runs_dir).expanduser() / experiment
        git = git_info()
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}_{git['commit']}_{config_digest}"
        with environment_errors(parent):
            parent.mkdir(parents=True, exist_ok=True)
            for k in range(10_000):
                path = parent / (stem if k == 0 else f"{stem}-{k}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - 10k runs in one second
                raise RunError(f"cannot create a new run directory in {parent}")
        run = cls.create_at(path, config_yaml, seed=seed, extra_env=extra_env, _exists_ok=True)
        run._link_latest(parent)
        return run

    @classmethod
    def create_at(
        cls,
        path: str | os.PathLike,
        config_yaml: str,
        *,
        seed: int | None = None,
        extra_env: dict[str, Any] | None = None,
        _exists_ok: bool = False,
    ) -> "RunDir":
        """A run directory at an exact path (sweeps use this); refuses a non-empty folder."""
        path = Path(path)
        run = cls(path)

        def occupied() -> bool:  # anything but our lock and empty folders a killed creation left
            return path.exists() and any(
                p.name != ".lock" and not (p.is_dir() and not any(p.iterdir())) for p in path.iterdir())

        if occupied() and not _exists_ok:
            raise RunError(f"run directory {path} already exists and is not empty (runs are never overwritten)")
        with environment_errors(path):
            path.mkdir(parents=True, exist_ok=True)
            run.claim()  # then check again: another process may have filled it meanwhile
            if occupied() and not _exists_ok:
                run.release()
                raise RunError(f"run directory {path} already exists and is not empty (runs are never overwritten)")
            run.checkpoints.mkdir(exist_ok=True)
            run.figures.mkdir(exist_ok=True)
            write_text_atomic(run.config_path, config_yaml)
            run.metrics_path.touch()
        env = {
            "versions": _versions(),
            "git": git_info(),
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "device": device_description(),
            "seed": seed,
            "argv": sys.argv,
            "cwd": os.getcwd(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        env.update(extra_env or {})
        write_json(run.path / "env.json", env)
        run.set_status("running")
        return run

    def _link_latest(self, parent: Path) -> None:
        link = parent / "latest"
        tmp = parent / f".latest.tmp-{os.getpid()}"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(self.path.name)
            os.replace(tmp, link)
        except OSError:  # file systems without symlinks: record the name instead
            try:
                (parent / "latest.txt").write_text(self.path.name + "\n")
            except OSError:
                pass

    # content
    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (flushed immediately)."""
        line = json.dumps(_finite(record), default=_json_default)
        with environment_errors(self.metrics_path), open(self.metrics_path, "a") as f:
            f.write(line + "\n")
            f.flush()

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl atomically (resume drops the records of a killed epoch)."""
        write_text_atomic(self.metrics_path, "".join(json.dumps(_finite(m), default=_json_default) + "\n"
                                                     for m in records))

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record of metrics.jsonl, in order (one dict per logged event; a line cut by a kill is skipped)."""
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a kill: skip it
        return out

    def set_status(self, status: str) -> None:
        """Write the run's status: running, complete, failed or terminated (atomically)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        write_text_atomic(self.path / "status", status + "\n")

    @contextmanager
    def status_on_error(self, enabled: bool = True):
        """Inside: Ctrl-C / SystemExit marks the run 'terminated', any other exception 'failed'
        (then re-raised). ``enabled=False`` (non-zero DDP ranks) leaves the status alone."""
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            if enabled:
                self._try_status("terminated")
            raise
        except BaseException:
            if enabled:
                self._try_status("failed")
            raise

    def _try_status(self, status: str) -> None:
        """Record a status while another error propagates (a full disk must not hide it)."""
        try:
            self.set_status(status)
        except Exception:
            pass

    @property
    def status(self) -> str | None:
        """The status written last (running / complete / failed / terminated), None before any."""
        p = self.path / "status"
        return p.read_text().strip() if p.exists() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write summary.json (atomically; NaN and Inf become null)."""
        write_json(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as a dict (the final numbers a run wrote), None before it finished."""
        if not self.summary_path.exists():
            return None
        return read_json(self.summary_path, "run summary")

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
