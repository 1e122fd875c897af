//! Builds the kernel for `x86_64-target.json` with a nested `cargo build`
//! (artifact dependencies do not work together with build-std), strips a
//! copy of it (the BIOS loader reads the image slowly under TCG), and wraps
//! that copy in a bootable BIOS disk image. The runner finds both files
//! through `KERNEL_ELF` and `KERNEL_IMAGE`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let boot_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = boot_dir.parent().unwrap().to_path_buf();
    let kernel_dir = root.join("kernel");
    let target_json = root.join("x86_64-target.json");
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("kernel");

    for watched in [
        "kernel/src",
        "kernel/Cargo.toml",
        "kernel/.cargo/config.toml",
        "refcnt/src",
        "refcnt/Cargo.toml",
        "x86_64-target.json",
        "boot/src/abi.rs",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&kernel_dir)
        .args(["build", "--release", "--bin", "kernel", "--target"])
        .arg(&target_json)
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host; the kernel gets its own
    // from kernel/.cargo/config.toml and the target spec.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .expect("could not start the nested cargo build of the kernel");
    if !status.success() {
        panic!("building the kernel failed ({status}); the errors are above");
    }

    let elf = target_dir.join("x86_64-target/release/kernel");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let stripped = out_dir.join("kernel.stripped");
    strip(&elf, &stripped);
    let image = out_dir.join("kernel-bios.img");
    // The loader's own log would clutter the console the runner parses.
    let mut boot_config = bootloader::BootConfig::default();
    boot_config.serial_logging = false;
    boot_config.frame_buffer_logging = false;
    bootloader::BiosBoot::new(&stripped)
        .set_boot_config(&boot_config)
        .create_disk_image(&image)
        .expect("creating the BIOS disk image failed");

    println!("cargo:rustc-env=KERNEL_ELF={}", elf.display());
    println!("cargo:rustc-env=KERNEL_IMAGE={}", image.display());
}

/// Copies `elf` to `out` without debug info, with llvm-objcopy from the
/// toolchain's llvm-tools component.
fn strip(elf: &Path, out: &Path) {
    let sysroot = Command::new(env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .expect("could not ask rustc for its sysroot");
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim());
    let host = env::var("HOST").unwrap();
    let objcopy = sysroot
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-objcopy");
    if !objcopy.exists() {
        panic!(
            "{} is missing: install the llvm-tools component (rustup component add llvm-tools-preview)",
            objcopy.display()
        );
    }
    let status = Command::new(&objcopy)
        .arg("--strip-debug")
        .arg(elf)
        .arg(out)
        .status()
        .expect("could not run llvm-objcopy");
    assert!(
        status.success(),
        "llvm-objcopy --strip-debug failed ({status})"
    );
}
