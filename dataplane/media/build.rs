//! Builds the RTP fast path (bpf/fastpath.c) into a BPF object with clang from Debian
//! (`clang`, `libbpf-dev`; `make test-deps` installs them). Without clang the object is empty
//! and the edge reports the fast path as not built, relaying in userspace only.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    let src = "bpf/fastpath.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=TRUNKGATE_BPF_CLANG");
    let clang = std::env::var("TRUNKGATE_BPF_CLANG").unwrap_or_else(|_| "clang".into());
    // Built again once clang appears (make test-deps installs it after a first `make run`): a
    // path that does not exist makes cargo run this script on every build until it does.
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(&clang))
            .find(|p| p.exists())
    });
    let watched = found.unwrap_or_else(|| PathBuf::from("/usr/bin/clang"));
    println!("cargo:rerun-if-changed={}", watched.display());
    let arch_include = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    // Twice: the map private to the process, and the map pinned in bpffs (an edge that
    // restores its calls after a restart keeps their streams forwarding meanwhile).
    for (name, define) in [
        ("fastpath.o", "-DTRUNKGATE_PRIVATE"),
        ("fastpath_pinned.o", "-DTRUNKGATE_PINNED"),
    ] {
        build(&clang, &arch_include, define, src, &dir.join(name));
    }
}

fn build(clang: &str, arch_include: &str, define: &str, src: &str, out: &std::path::Path) {
    let built = Command::new(clang)
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-Wall",
            "-Werror",
            arch_include,
            define,
            "-c",
            src,
            "-o",
        ])
        .arg(out)
        .status();
    match built {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!(
                "cargo:warning=RTP fast path not built: {clang} exited with {s} (install clang and libbpf-dev)"
            );
            let _ = std::fs::write(out, b"");
        }
        Err(e) => {
            println!(
                "cargo:warning=RTP fast path not built: {clang}: {e} (install clang and libbpf-dev)"
            );
            let _ = std::fs::write(out, b"");
        }
    }
}
