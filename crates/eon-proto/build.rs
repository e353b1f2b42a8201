//! Compiles `proto/eon/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building eon never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["common", "meta", "data", "query", "agent", "raft"]
        .map(|name| root.join(format!("eon/v1/{name}.proto")));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .bytes(".eon.v1")
        .compile_fds(fds)?;
    Ok(())
}
