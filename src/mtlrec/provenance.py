"""Seeding, and the provenance block (versions, commit, device) written into every result file."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlrec.errors import MtlrecError
from mtlrec.kernels import cpu_linear, flush_denormal

TRACKED_PACKAGES = ("mtlrec", "torch", "numpy", "pandas", "pyarrow", "scikit-learn")


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every GPU), and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def use_deterministic_kernels(device: torch.device) -> None:
    """On a GPU, make torch pick deterministic kernels (or fail loudly where it has none): its
    atomics-based sums (index_add_, scatter_add_, ...) otherwise add in a varying order, so two
    runs of one seed could differ. cuBLAS needs a fixed workspace for that, set before its first
    call. CPU runs are deterministic without it and are left alone (their bits must not change)."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; anything else is taken as given, once this
    machine is known to have it (else a one-line error, not torch's traceback mid-run)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise MtlrecError(f"runtime.device is '{name}', but this machine has "
                              f"{count} CUDA device(s); use 'auto' or 'cpu'")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise MtlrecError(f"runtime.device is '{name}', but MPS is not available here; "
                          "use 'auto' or 'cpu'")
    return device


def git_commit() -> str:
    """The commit of the checkout this package's code runs from (with '-dirty' when its tracked
    source files differ), or 'unknown' outside git. Asked of the package's own folder, not of
    the working directory (jobs run inside the output root, e.g. ci-out/)."""
    source = Path(__file__).resolve().parent  # src/mtlrec
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
            check=True, cwd=source,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            cwd=source.parent,  # src/
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        if package == "torch":  # the build tag (+cpu, +cu130) matters for reproducibility
            found["torch"] = torch.__version__
            continue
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "absent"
    return found


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}"


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo; else what `platform` knows, or '?').
    The same params and seed give the same bits on one CPU model, not across models: their BLAS
    and oneDNN kernels sum in other orders."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def device_label(prov: dict[str, Any]) -> str:
    """A result's device as tables print it: 'cpu:x86_64', with the CPU model where recorded."""
    return f"{prov['device']} ({prov['cpu']})" if "cpu" in prov else prov["device"]


def provenance(device: torch.device, num_threads: int) -> dict[str, Any]:
    """Everything needed to tell where a result came from. Deterministic for a fixed checkout
    on one machine type."""
    found = {
        "git_commit": git_commit(),
        "versions": versions(),
        "device": device_description(device),
        "num_threads": num_threads,
        "linear_kernels": cpu_linear() if device.type == "cpu" else "torch",
    }
    if device.type == "cpu":
        found |= {"cpu": cpu_model(), "flush_denormal": flush_denormal()}
    return found


def _umask_mode() -> int:
    """The mode a plain new file gets here (0o666 less the umask): what others may read."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_failure(path: Path, exc: BaseException) -> MtlrecError:
    """One line naming the path and the cause of a failed write (full disk included: torch's
    writer reports it as 'unexpected pos', without the word space)."""
    cause = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    except OSError:
        free = None
    if free is not None and free < 64 << 20:
        cause += f"; {free >> 20} MiB free on that disk (is it full?)"
    return MtlrecError(f"cannot write {path}: {cause}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary file next to `path`, then rename it into place (with the
    mode the umask gives new files, not mkstemp's private 0600). A failure (no permission, a
    full disk) is an MtlrecError naming the path; nothing is left at `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_failure(path, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        raise write_failure(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: Path) -> None:
    """Fail at once (not after an epoch) when `folder` cannot take files."""
    atomic_write(folder / ".write-check", lambda tmp: tmp.write_bytes(b""))
    (folder / ".write-check").unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def strict_json(value: Any) -> Any:
    """`value` with every NaN float as None (JSON null): a metric undefined on a split (AUC of a
    single-class column) is written as null, never as the invalid JSON token NaN. An infinite
    float is an error (a diverged run must not reach a result file)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise MtlrecError(f"refusing to write a non-finite number ({value}) to a result file")
        return value
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Strict JSON (no NaN/Infinity tokens: see `strict_json`), keys sorted, atomically."""
    text = json.dumps(strict_json(payload), indent=2, sort_keys=True, allow_nan=False)
    write_text_atomic(path, text + "\n")


def save_torch_atomic(path: Path, payload: Any) -> None:
    """torch.save `payload` to `path` atomically, byte-identical for identical tensors (saved
    through a file handle: a path would put the random temporary name inside the archive)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)

    atomic_write(path, write)
