//! Generates the gRPC code from `proto/` with the vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler, and from the same descriptors
//! the proto3 canonical JSON mapping (serde impls, by `pbjson-build`) that
//! the HTTP/JSON API speaks.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    unsafe { env::set_var("PROTOC", protoc) };
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("tokenvault_descriptor.bin");
    // The vendored include directory has google/protobuf/descriptor.proto,
    // which google/api/annotations.proto imports.
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(
            &[PathBuf::from("proto/tokenvault/v1/tokenvault.proto")],
            &includes,
        )?;
    // Serialize / Deserialize for tokenvault.v1 only: camelCase names
    // (both spellings accepted), enums by name, 64-bit integers as
    // strings, default values left out, unknown fields refused.
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .build(&[".tokenvault.v1"])?;
    // The operator API is served on a Unix socket only; its descriptors stay
    // out of the set that reflection serves on the network port.
    tonic_prost_build::configure()
        .compile_protos(&["proto/tokenvault/admin/v1/admin.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
