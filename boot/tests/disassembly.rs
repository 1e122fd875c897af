//! The per-CPU fast paths compile to single `gs:`-relative instructions:
//! checked in the kernel's own disassembly (llvm-objdump from the
//! toolchain's llvm-tools), on out-of-line probe copies of them.

use std::path::PathBuf;
use std::process::Command;

fn objdump() -> PathBuf {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim());
    let bin = sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-objdump");
    assert!(
        bin.exists(),
        "{} missing: rustup component add llvm-tools-preview",
        bin.display()
    );
    bin
}

/// The instructions of `symbol`, without addresses and bytes.
fn disassemble(symbol: &str) -> Vec<String> {
    let out = Command::new(objdump())
        .args([
            "-d",
            "--no-show-raw-insn",
            "--no-leading-addr",
            "-M",
            "intel",
        ])
        .arg(format!("--disassemble-symbols={symbol}"))
        .arg(boot::KERNEL_ELF)
        .output()
        .expect("llvm-objdump runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with(&format!("<{symbol}>")))
        .skip(1)
        .filter(|l| !l.is_empty() && *l != "int3") // int3: padding after the function
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn percpu_add_is_one_gs_relative_add() {
    let insns = disassemble("percpu_probe_add");
    assert_eq!(insns.len(), 2, "{insns:#?}");
    assert!(insns[0].starts_with("add qword ptr gs:["), "{insns:#?}");
    assert_eq!(insns[1], "ret");
}

#[test]
fn cpu_id_is_one_gs_relative_load() {
    let insns = disassemble("percpu_probe_cpu_id");
    assert_eq!(insns.len(), 2, "{insns:#?}");
    assert_eq!(insns[0], "mov rax, qword ptr gs:[0x8]");
    assert_eq!(insns[1], "ret");
}

#[test]
fn sched_read_section_is_one_inc_and_one_sub_on_gs() {
    let insns = disassemble("percpu_probe_sched_section");
    let gs: Vec<&String> = insns.iter().filter(|i| i.contains("gs:")).collect();
    assert_eq!(
        gs,
        ["inc qword ptr gs:[0x18]", "sub qword ptr gs:[0x18], 0x1"],
        "the fast path touches the per-CPU area twice and nothing else: {insns:#?}"
    );
    assert!(
        insns
            .iter()
            .any(|i| i.starts_with("setb") || i.starts_with("setc")),
        "{insns:#?}"
    );
}

#[test]
fn percpu_ref_fast_path_is_a_load_a_test_a_branch_and_a_gs_add() {
    let insns = disassemble("percpu_probe_add_unless");
    let memory: Vec<&String> = insns.iter().filter(|i| i.contains('[')).collect();
    assert_eq!(
        memory.len(),
        2,
        "the load of the handle's word and the add, and no section count: {insns:#?}"
    );
    assert!(
        memory[0].starts_with("mov ") && !memory[0].contains("gs:"),
        "{insns:#?}"
    );
    assert!(memory[1].starts_with("add qword ptr gs:["), "{insns:#?}");
    assert!(
        insns
            .iter()
            .any(|i| i.starts_with("test ") && !i.contains('[')),
        "the flag is tested in a register: {insns:#?}"
    );
    assert!(insns.len() <= 8, "{insns:#?}");
}

/// A whole `PercpuRef<Kernel>::get_many(1)`, as callers inline it: up to
/// its per-CPU add, one memory access besides the add, the load of the
/// handle's word (no load through the ref's shared state, no per-CPU
/// flag, no section count), then the out-of-line slow path.
#[test]
fn percpu_ref_get_loads_only_the_handle_word_before_its_add() {
    let insns = disassemble(&symbol_containing("percpu_ref_probe_get"));
    let add = insns
        .iter()
        .position(|i| i.starts_with("add qword ptr gs:["))
        .unwrap_or_else(|| panic!("no per-CPU add: {insns:#?}"));
    let before: Vec<&String> = insns[..add]
        .iter()
        .filter(|i| i.contains('[') && !i.starts_with("lea"))
        .collect();
    assert_eq!(
        before.len(),
        1,
        "memory accesses before the add: {insns:#?}"
    );
    assert!(!before[0].contains("gs:"), "{insns:#?}");
    assert_eq!(
        insns.iter().filter(|i| i.contains("gs:")).count(),
        1,
        "one per-CPU access in all: {insns:#?}"
    );
}

/// The mangled name of the kernel's function whose symbol contains `part`
/// (for probes that are not `no_mangle`).
fn symbol_containing(part: &str) -> String {
    let out = Command::new(objdump())
        .arg("-t")
        .arg(boot::KERNEL_ELF)
        .output()
        .expect("llvm-objdump runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let found: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.contains(part))
        .collect();
    assert_eq!(found.len(), 1, "one symbol containing {part}: {found:#?}");
    found[0].to_string()
}

/// Issue 21: an SRCU-fast read section (lock and unlock) of a domain whose
/// type fixes the flavour, in the kernel as built for `scripts/run` and
/// `scripts/bench` (refcnt without the feature `checks`), is two
/// `add gs:[...]` and nothing around them that costs: no interrupts-off
/// window, no call (the slots are not checked: the handle keeps the
/// counters' offset, and the index is masked), no fence or locked
/// instruction, no test of the flavour.
#[test]
fn srcu_fast_read_section_is_two_gs_adds_without_checks() {
    let insns = disassemble(&symbol_containing("srcu_probe_fast_read_section"));
    let gs: Vec<&String> = insns.iter().filter(|i| i.contains("gs:")).collect();
    assert_eq!(gs.len(), 2, "the lock's add and the unlock's: {insns:#?}");
    assert!(
        gs.iter().all(|i| i.starts_with("add qword ptr gs:[")),
        "{insns:#?}"
    );
    for bad in ["cli", "sti", "pushf", "popf", "lock", "mfence", "xchg"] {
        assert!(
            !insns.iter().any(|i| i.starts_with(bad)),
            "`{bad}` in the read section: {insns:#?}"
        );
    }
    assert!(
        insns
            .iter()
            .filter(|i| i.starts_with("call") || i.starts_with("jmp"))
            .all(|i| !i.contains('<') || i.contains("srcu_probe")),
        "no call or jump out of the read section, not even to a slot check's panic: {insns:#?}"
    );
    assert!(
        !insns.iter().any(|i| i.starts_with("cmp byte ptr")),
        "the flavour is tested at run time: {insns:#?}"
    );
    // The lock loads the domain and its reader word (the index and the
    // counter's offset in one word, as Linux's `srcu_ctrp`); the probe's
    // `black_box` of the guard stores its two words and reloads one; the
    // unlock adds through the guard's word with no load. Loading the index
    // and the key apart (or through the handle) would add loads, a slot
    // check another.
    let memory = insns
        .iter()
        .filter(|i| i.contains('[') && !i.contains("gs:") && !i.starts_with("lea"))
        .count();
    assert!(
        memory <= 5,
        "{memory} memory accesses besides the two adds: {insns:#?}"
    );
}
