"""What machine a benchmark ran on, for the scripts beside this file (imported as `machine`)."""
import platform


def _cpuinfo_field(name):
    """The first CPU's field `name` (the key before the colon, matched whole, as machine.rs does:
    "model" is not "model name")."""
    try:
        for line in open("/proc/cpuinfo"):
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name with its family and model numbers (/proc/cpuinfo), e.g. "AMD EPYC,
    family 25 model 1", else what `platform` says. The numbers tell generations apart where the
    name does not (the "AMD EPYC" VMs of these benchmarks were Zen 3, family 25, on some days and
    Zen 5, family 26, on others)."""
    name = _cpuinfo_field("model name")
    if not name:
        return platform.processor() or platform.machine() or "unknown"
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    return f"{name}, family {family} model {model}" if family and model else name


def cpu_flags():
    """The CPU's instruction-set flags (/proc/cpuinfo), empty when unknown."""
    return set((_cpuinfo_field("flags") or "").split())


WATCHED_VECTOR_FLAGS = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8"]


def vector_extensions():
    """The vector extensions of those the kernels (facegate's, ONNX Runtime's, OpenBLAS's) choose
    between at run time, as `facegate bench` prints them. The model name does not say it."""
    f = cpu_flags()
    present = [x for x in WATCHED_VECTOR_FLAGS if x in f]
    out = " ".join(present) if present else "none of avx2/avx512"
    if "avx512f" not in f:
        out += ", no AVX-512"
    return out


def describe():
    """One line for a benchmark's header: model, logical CPUs, vector extensions."""
    import os
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {vector_extensions()}"


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
