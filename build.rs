//! Records the target triple, which only build scripts can see, for the handshake.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=BINCREW_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
