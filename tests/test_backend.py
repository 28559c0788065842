import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import pytest

from lift_mlx import backend


def test_the_wired_limit_is_the_devices_recommended_size_where_it_has_one():
    recommended = mx.device_info().get("max_recommended_working_set_size")
    before = backend.use_recommended_wired_limit()
    if recommended is None:  # the CPU: nothing to wire, nothing changed
        assert before is None
        return
    try:
        assert backend.use_recommended_wired_limit() == recommended  # the limit now in force
    finally:
        mx.set_wired_limit(before)


ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the BLAS is chosen on Linux only")
# In a fresh interpreter: the BLAS the backend loaded, whether its library is mapped into the
# process, and a matmul against numpy's; then the slow-BLAS warning, asked for twice.
PROBE = """if True:
    import json
    import numpy as np
    from lift_mlx import backend
    import mlx.core as mx
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    maps = open("/proc/self/maps").read()
    print(json.dumps({"source": backend.blas.source, "path": backend.blas.path,
                      "note": backend.blas.note,
                      "mapped": bool(backend.blas.path) and backend.blas.path in maps,
                      "right": np.allclose(np.array(mx.array(a) @ mx.array(a)), a @ a,
                                           rtol=1e-4, atol=1e-3)}))
    backend.warn_if_slow_blas()
    backend.warn_if_slow_blas()
"""


def _probe(tmp_path, choice: str, first: str = "") -> tuple[dict, list[str]]:
    env = {**os.environ, "LIFT_MLX_OPENBLAS": choice, "LIFT_MLX_HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", first + PROBE], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120, check=True)
    return json.loads(run.stdout), run.stderr.splitlines()


@linux_only
def test_pip_alone_brings_an_optimised_blas(tmp_path):
    """With the system's OpenBLAS out of the search (LIFT_MLX_OPENBLAS=pip), the cmeel-openblas
    wheel's library is loaded, through the soname-restored copy of MLX's own libgfortran, and
    MLX's matmuls run there and agree with numpy; where the wheel is not installed, one line
    says so with the command that installs it."""
    found, stderr = _probe(tmp_path, "pip")
    assert found["right"]
    if backend.pip_library() is None:
        assert found["source"] is None
        assert len(stderr) == 1 and "pip install cmeel-openblas" in stderr[0], stderr
        return
    lacks = [f for f in set(backend.CORE_NEEDS.values()) - backend.cpu_flags()
             if found["note"].endswith(f"this CPU lacks {f}")]
    if lacks:  # the wheel is built for one core whose instructions this CPU does not have:
        # refused before MLX binds it (it would die with SIGILL), said once, with a fix
        assert found["source"] is None and len(stderr) == 1, stderr
        assert "did not load: it is built for" in stderr[0] and "fix: " in stderr[0]
        return
    assert found["source"] == "pip" and found["path"] == str(backend.pip_library())
    assert found["mapped"] and stderr == []
    assert not any(tmp_path.iterdir())  # the libgfortran copy lives in memory only


def test_an_openblas_built_for_one_core_runs_only_where_the_cpu_has_its_instructions():
    """The configurations two real libraries report: cmeel-openblas 0.3.31's x86_64 wheel
    (one core, SKYLAKEX) and Debian's libopenblas0-pthread (DYNAMIC_ARCH)."""
    wheel = "OpenBLAS 0.3.31 NO_AFFINITY SKYLAKEX MAX_THREADS=4"
    debian = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"
    avx2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}  # an AMD EPYC's, less most of its flags
    why = backend.missing_instructions(wheel, "SKYLAKEX", avx2)
    assert why == "it is built for SKYLAKEX CPUs only and this CPU lacks avx512f"
    assert backend.missing_instructions(wheel, "SKYLAKEX", avx2 | {"avx512f"}) is None
    assert backend.missing_instructions(debian, "Zen", {"sse2"}) is None  # picks at run time
    assert backend.missing_instructions(wheel, "NEOVERSEN1", {"asimd"}) is None  # not listed
    assert backend.missing_instructions(wheel, "SKYLAKEX", set()) is None  # flags unreadable
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        assert "sse2" in backend.cpu_flags()  # every x86_64 CPU has it: the flags were read


@linux_only
def test_the_reference_blas_is_said_once_with_its_fix(tmp_path):
    missing = str(tmp_path / "no" / "libopenblas.so.0")
    found, stderr = _probe(tmp_path, missing)
    assert found["source"] is None and found["right"]
    assert len(stderr) == 1, stderr  # asked twice, said once
    assert "reference BLAS" in stderr[0] and missing in stderr[0]
    assert stderr[0].endswith("fix: unset LIFT_MLX_OPENBLAS")


@linux_only
def test_importing_mlx_first_is_too_late_and_said_so(tmp_path):
    found, stderr = _probe(tmp_path, "", first="import mlx.core\n")
    assert found["source"] is None and len(stderr) == 1
    assert stderr[0].endswith("fix: import lift_mlx before mlx.core")


def test_a_file_that_is_no_shared_library_is_refused_not_patched(tmp_path):
    """A broken or foreign file where MLX's libgfortran should be gives an OSError, which the
    loader turns into the reference BLAS and a note, never a crash at import."""
    (tmp_path / "lib.so").write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(OSError):
        backend._with_soname(tmp_path / "lib.so", "libgfortran.so.5")
