//! Stamps the build id and checks the declared workers (see bincrew-build).
fn main() {
    bincrew_build::build();
}
