//! The request messages of `proto/tokenvault/v1/tokenvault.proto` with
//! their proto3 canonical JSON impls, as the main crate's build.rs makes
//! them (prost without the gRPC service code, pbjson for tokenvault.v1),
//! for the `json` target.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded.
    unsafe { env::set_var("PROTOC", protoc) };
    let descriptors = PathBuf::from(env::var("OUT_DIR")?).join("descriptors.bin");
    let includes = [
        PathBuf::from("../../proto"),
        protoc_bin_vendored::include_path()?,
    ];
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&["../../proto/tokenvault/v1/tokenvault.proto"], &includes)?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .build(&[".tokenvault.v1"])?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
