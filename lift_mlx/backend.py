"""Platform-specific set-up, kept in one place.

MLX's Linux CPU wheel ships a reference BLAS: fp32 matmuls run 10-20x slower than with an
optimised one. When an OpenBLAS library with plain symbol names is loaded globally *before*
``mlx.core``, MLX resolves its BLAS and LAPACK calls there, with identical results. Two are
looked for, in this order:

- the system's (Debian: ``apt-get install libopenblas0-pthread``);
- the ``cmeel-openblas`` wheel, a Linux dependency of lift-mlx, so that ``pip install`` alone
  brings the fast path. Its library needs ``libgfortran.so.5``, which a fresh machine lacks;
  the ``mlx[cpu]`` wheel bundles one under a hashed name (auditwheel renames it), so a copy of
  that one, its soname set back to ``libgfortran.so.5``, is loaded first (from memory: no file
  is written).

A library built for one CPU core (no DYNAMIC_ARCH) is bound only where this CPU has that
core's instructions; elsewhere it would die with SIGILL at the first matmul.

Without either everything still runs, only slower, and `warn_if_slow_blas` says so once. On
macOS MLX uses Accelerate and Metal, and nothing is done.

``LIFT_MLX_OPENBLAS``: ``0`` skips this, ``pip`` uses only the wheel's library, a path loads that
library only.
"""

from __future__ import annotations

import ctypes
import os
import platform
import shlex
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

ENV = "LIFT_MLX_OPENBLAS"
PIP_PACKAGE = "cmeel-openblas"  # the wheel's files land in site-packages/cmeel.prefix
PIP_LIBRARY = Path("cmeel.prefix", "lib", "libopenblas.so.0")
PIP_MACHINES = ("x86_64", "aarch64")  # those cmeel-openblas has wheels for
# scripts/bench_blas.py, fp32 matmul GFLOP/s at 1024 / 2048 on a 2-core x86_64 shared with
# other work (best of 15): reference BLAS 6.1 / 6.1, apt OpenBLAS 140 / 104, cmeel-openblas
# 108 / 100; with more load on the cores the optimised ones fall to ~50, the reference to ~3
SLOWDOWN = "10-20x"
# OpenBLAS cores that need more than their architecture's baseline: the /proc/cpuinfo flag of
# the newest instructions each one's kernels use
CORE_NEEDS = {"sandybridge": "avx", "haswell": "avx2", "zen": "avx2", "skylakex": "avx512f",
              "cooperlake": "avx512_bf16", "sapphirerapids": "avx512_fp16"}

_SYSTEM = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)
TOO_LATE = "mlx.core was imported before lift_mlx"
_GFORTRAN_SONAME = "libgfortran.so.5"  # what cmeel-openblas's library asks for
# ELF: program header kinds and dynamic-section tags (elf.h)
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_STRTAB, DT_SONAME = 0, 5, 14


@dataclass(frozen=True)
class Blas:
    """The BLAS this process loaded for MLX's CPU backend: `source` is "system", "pip", "env"
    (a path in LIFT_MLX_OPENBLAS) or None (MLX's reference BLAS); `note` says why none."""

    source: str | None
    path: str | None
    note: str = ""

    @property
    def name(self) -> str:
        return {None: "reference BLAS bundled with MLX", "system": "system OpenBLAS",
                "pip": f"OpenBLAS from {PIP_PACKAGE}", "env": f"OpenBLAS from {ENV}"}[self.source]

    def describe(self) -> str:
        if self.source is None:
            return self.name + (f" ({self.note})" if self.note else "")
        return f"{self.name}: {self.path}"


def _site_dirs() -> list[Path]:
    return [Path(p) for p in sys.path if p and os.path.isdir(p)]


def pip_library() -> Path | None:
    """cmeel-openblas's libopenblas.so.0 where the wheel is installed, else None."""
    return next((d / PIP_LIBRARY for d in _site_dirs() if (d / PIP_LIBRARY).is_file()), None)


def _with_soname(src: Path, soname: str) -> bytes:
    """ELF64 shared library `src` with its DT_SONAME string overwritten by the shorter `soname`,
    so that libraries that need `soname` find it once it is loaded."""
    data = bytearray(src.read_bytes())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise OSError(f"{src} is not a little-endian ELF64 file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic = [], None
    for i in range(phnum):
        kind, _, offset, vaddr, _, size = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if kind == PT_LOAD:  # where virtual addresses lie in the file
            loads.append((vaddr, offset, size))
        elif kind == PT_DYNAMIC:
            dynamic = (offset, size)
    tags = {}
    for k in range(dynamic[1] // 16 if dynamic else 0):
        tag, value = struct.unpack_from("<qQ", data, dynamic[0] + 16 * k)
        if tag == DT_NULL:
            break
        tags.setdefault(tag, value)
    if DT_STRTAB not in tags or DT_SONAME not in tags:
        raise OSError(f"{src} has no soname")
    strtab = next((tags[DT_STRTAB] - v + o for v, o, size in loads
                   if v <= tags[DT_STRTAB] < v + size), None)
    if strtab is None:
        raise OSError(f"{src}'s string table lies in no loaded segment")
    start = strtab + tags[DT_SONAME]
    end = data.find(b"\0", start)
    if end < 0 or len(soname) > end - start:
        raise OSError(f"{src}'s soname is shorter than {soname}")
    data[start:end] = soname.encode().ljust(end - start, b"\0")
    return bytes(data)


def _load_gfortran() -> None:
    """Make libgfortran.so.5 loaded: a soname-restored copy of the one the mlx[cpu] wheel
    bundles (the same on every machine), else the system's."""
    for site in _site_dirs():
        bundled = sorted((site / "mlx_cpu.libs").glob("libgfortran-*.so*"))
        if bundled:
            libs = bundled[0].parent
            # its renamed libquadmath is found by soname once loaded (the copy's $ORIGIN is not
            # mlx_cpu.libs); aarch64 has none
            for quadmath in sorted(libs.glob("libquadmath-*.so*")):
                ctypes.CDLL(str(quadmath), mode=ctypes.RTLD_GLOBAL)
            # an anonymous in-memory file: nothing written to disk, nothing to go stale
            fd = os.memfd_create(_GFORTRAN_SONAME)
            try:
                with open(fd, "wb", closefd=False) as f:
                    f.write(_with_soname(bundled[0], _GFORTRAN_SONAME))
                ctypes.CDLL(f"/proc/self/fd/{fd}", mode=ctypes.RTLD_GLOBAL)
            finally:
                os.close(fd)  # the loader keeps its own mapping
            return
    ctypes.CDLL(_GFORTRAN_SONAME, mode=ctypes.RTLD_GLOBAL)


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (/proc/cpuinfo), empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def missing_instructions(config: str, core: str, flags: set[str]) -> str | None:
    """Why an OpenBLAS built as `config` (openblas_get_config) for `core` cannot run on a CPU
    with `flags`, else None. A DYNAMIC_ARCH build picks its kernels at run time and runs
    anywhere; one built for a single core dies with SIGILL at its first matmul on a CPU without
    that core's instructions (measured: cmeel-openblas 0.3.31's x86_64 wheel is built for
    SKYLAKEX, and an AVX2 AMD EPYC without AVX-512 crashed on it)."""
    need = CORE_NEEDS.get(core.lower())
    if "DYNAMIC_ARCH" in config.split() or need is None or not flags or need in flags:
        return None
    return f"it is built for {core} CPUs only and this CPU lacks {need}"


def _load(path: str | Path, source: str) -> Blas:
    library = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)  # not yet visible to MLX
    try:
        config, core = library.openblas_get_config, library.openblas_get_corename
    except AttributeError:  # no OpenBLAS query functions: nothing to check
        pass
    else:
        config.restype = core.restype = ctypes.c_char_p
        why = missing_instructions((config() or b"").decode(errors="replace"),
                                   (core() or b"").decode(errors="replace"), cpu_flags())
        if why:
            raise OSError(why)
    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)  # promoted: MLX binds its BLAS here
    return Blas(source, str(path))


def _load_pip() -> Blas:
    library = pip_library()
    if library is None:
        return Blas(None, None, f"{PIP_PACKAGE} is not installed")
    try:
        _load_gfortran()
        return _load(library, "pip")
    except (OSError, struct.error, AttributeError) as e:  # AttributeError: no os.memfd_create
        return Blas(None, None, f"{library} did not load: {e}")


def _load_openblas() -> Blas:
    choice = os.environ.get(ENV, "")
    if not sys.platform.startswith("linux"):
        return Blas(None, None, "not Linux")
    if choice == "0":
        return Blas(None, None, f"{ENV}=0")
    if "mlx.core" in sys.modules:  # too late: MLX already bound its BLAS symbols
        return Blas(None, None, TOO_LATE)
    # OpenBLAS needs at least two threads to beat the reference BLAS by the margin quoted above.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(max(2, os.cpu_count() or 2)))
    if choice == "pip":
        return _load_pip()
    if choice:
        try:
            return _load(choice, "env")
        except OSError as e:
            return Blas(None, None, f"{ENV}={choice} did not load: {e}")
    for path in _SYSTEM:
        if os.path.exists(path):
            try:
                return _load(path, "system")
            except OSError:
                continue
    return _load_pip()


blas = _load_openblas()
openblas_path: str | None = blas.path


def fix_command() -> str:
    """The command that gives MLX's CPU backend an optimised BLAS on this machine."""
    choice = os.environ.get(ENV, "")
    if blas.note == TOO_LATE:
        return "import lift_mlx before mlx.core"
    if choice and not (choice == "pip" and pip_library() is None):
        return f"unset {ENV}"
    if platform.machine() in PIP_MACHINES and pip_library() is None:
        return f"{shlex.quote(sys.executable)} -m pip install {PIP_PACKAGE}"
    if shutil.which("apt-get"):
        return "sudo apt-get install libopenblas0-pthread"
    if shutil.which("dnf"):
        return "sudo dnf install openblas"
    return f"install OpenBLAS and set {ENV} to its libopenblas.so.0"


_warned = False


def warn_if_slow_blas() -> None:
    """Say once, on stderr, when MLX computes on the CPU with its reference BLAS: what was
    found, what it costs, and the command that fixes it."""
    global _warned
    # backend runs before mlx.core may be imported (it decides which BLAS MLX binds)
    import mlx.core as mx

    if _warned or blas.source is not None or mx.default_device().type != mx.DeviceType.cpu:
        return
    _warned = True
    print(f"lift-mlx: slow CPU matmuls, about {SLOWDOWN} slower than with OpenBLAS: MLX uses "
          f"its {blas.describe()}; fix: {fix_command()}", file=sys.stderr)


def use_recommended_wired_limit() -> int | None:
    """On Metal, let MLX keep up to the device's recommended working set wired, so a large
    model's weights are not paged out while absorbing or answering (mlx-lm does the same for
    generation). Returns the previous limit; None, doing nothing, where the device recommends
    no size (the CPU)."""
    # mlx_lm imports transformers (~1 s); the CLI imports this module for every command
    from mlx_lm.utils import maybe_set_recommended_wired_limit

    return maybe_set_recommended_wired_limit()
