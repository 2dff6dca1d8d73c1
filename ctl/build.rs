//! Link `hfctl` as a position-dependent executable. Every command is a new
//! process, and a position-independent one spends most of its start making
//! the dynamic loader apply ~38,000 relative relocations, each page of
//! `.data.rel.ro` they touch copied on write (~280 page faults): about a
//! millisecond per command. Without PIE the linker resolves them once, at
//! link time. The cost is that `hfctl`'s own code and data are not at a
//! random address (the libraries it loads still are); it is a client that
//! runs with its caller's rights and never with more.

fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
