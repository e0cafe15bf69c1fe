"""What machine a benchmark ran on, for the scripts beside this file (imported as `machine`)."""
import platform


def _cpuinfo_field(name):
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name (/proc/cpuinfo), else what `platform` says."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags():
    """The CPU's instruction-set flags (/proc/cpuinfo), empty when unknown."""
    return set((_cpuinfo_field("flags") or "").split())


def openblas_coretype():
    """The OpenBLAS kernel family for this CPU's instruction set, for OPENBLAS_CORETYPE (None: let
    OpenBLAS decide). OpenBLAS builds older than a CPU may not recognise it and fall back to generic
    kernels; naming the family gives a peer linked to such a build its best."""
    f = cpu_flags()
    if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= f:
        return "SkylakeX"
    if {"avx2", "fma"} <= f:
        return "Haswell"
    return None
