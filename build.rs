//! Generates the gRPC code from `proto/` with the vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    unsafe { env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("tokenvault_descriptor.bin"))
        .compile_protos(&["proto/tokenvault/v1/tokenvault.proto"], &["proto"])?;
    // The operator API is served on a Unix socket only; its descriptors stay
    // out of the set that reflection serves on the network port.
    tonic_prost_build::configure()
        .compile_protos(&["proto/tokenvault/admin/v1/admin.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
