//! Which machine a benchmark ran on: the CPU's model name and the vector extensions that
//! facegate's kernels and ONNX Runtime choose between at run time. Every benchmark prints it —
//! `facegate bench`, `bench-search`, `bench-passport`, `bench-gallery`, and the Criterion benches
//! of the library crates, which include this file by path (it needs nothing but std) so there is
//! one copy.
#![allow(dead_code)] // each including bench uses part of it

/// The first CPU's `field` in /proc/cpuinfo (Linux).
fn cpuinfo_field(field: &str) -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == field))
        .map(|l| l.split_once(':').map_or("", |(_, v)| v).trim().to_string())
}

/// The CPU's model name with its family and model numbers, e.g. "AMD EPYC, family 25 model 1".
/// The numbers tell generations apart where the name does not: the "AMD EPYC" virtual machines
/// these benchmarks ran on were Zen 3 (family 25, no AVX-512, 2.45 GHz) on some days and Zen 5
/// (family 26) on others, and every stage, not only the AVX-512 kernels, ran at different speeds.
pub fn cpu_model() -> String {
    let name = cpuinfo_field("model name").unwrap_or_else(|| "unknown CPU".into());
    match (cpuinfo_field("cpu family"), cpuinfo_field("model")) {
        (Some(f), Some(m)) => format!("{name}, family {f} model {m}"),
        _ => name,
    }
}

/// The vector extensions this CPU offers of those facegate's kernels and ONNX Runtime choose
/// between at run time (/proc/cpuinfo's flags), e.g. "avx2 fma avx512f avx512bw avx512vl
/// avx512_vnni". Printed with every benchmark because the model name does not say it.
pub fn vector_extensions() -> String {
    const WATCHED: [&str; 8] = [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx_vnni",
        "amx_int8",
    ];
    let flags = cpuinfo_field("flags").unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    vector_extensions_of(&have, &WATCHED)
}

fn vector_extensions_of(have: &[&str], watched: &[&str]) -> String {
    let present: Vec<&str> = watched
        .iter()
        .copied()
        .filter(|f| have.contains(f))
        .collect();
    let mut out = if present.is_empty() {
        "none of avx2/avx512".to_string()
    } else {
        present.join(" ")
    };
    if !present.contains(&"avx512f") {
        out.push_str(", no AVX-512");
    }
    out
}

/// One line for a benchmark's header: model, vector extensions, logical CPUs, e.g.
/// "AMD EPYC, family 25 model 1 (avx2 fma, no AVX-512), 2 logical CPUs".
pub fn describe() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{} ({}), {cpus} logical CPUs",
        cpu_model(),
        vector_extensions()
    )
}

#[cfg(test)]
mod tests {
    // Benches include this file without a test harness, so their builds leave the tests out.
    #[allow(unused_imports)]
    use super::{describe, vector_extensions_of};

    const WATCHED: [&str; 4] = ["avx2", "fma", "avx512f", "avx512_vnni"];

    #[test]
    fn vector_extensions_name_what_the_cpu_has_in_a_fixed_order() {
        let avx512 = ["fpu", "avx512_vnni", "fma", "avx512f", "avx2", "sse2"];
        assert_eq!(
            vector_extensions_of(&avx512, &WATCHED),
            "avx2 fma avx512f avx512_vnni"
        );
        let avx2 = ["fpu", "fma", "avx2", "sse2"];
        assert_eq!(
            vector_extensions_of(&avx2, &WATCHED),
            "avx2 fma, no AVX-512"
        );
        assert_eq!(
            vector_extensions_of(&["sse2"], &WATCHED),
            "none of avx2/avx512, no AVX-512"
        );
    }

    #[test]
    fn the_description_names_the_vector_extensions_and_the_cpus() {
        let d = describe();
        assert!(
            d.contains(&format!("({})", super::vector_extensions())),
            "{d}"
        );
        assert!(d.ends_with("logical CPUs"), "{d}");
    }
}
