//! Generates the gRPC code from `proto/` with the vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler, and from the same descriptors
//! the proto3 canonical JSON mapping (serde impls, by `pbjson-build`) that
//! the HTTP/JSON API speaks, and its OpenAPI 3 document.

use std::{env, path::PathBuf};

#[path = "src/api/http/openapi_build.rs"]
mod openapi_build;

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
    // The OpenAPI document from the same descriptors and their
    // google.api.http rules (served at /v1/openapi.json).
    let pool = prost_reflect::DescriptorPool::decode(std::fs::read(&descriptor_path)?.as_slice())?;
    let document = openapi_build::document(
        &pool,
        "tokenvault.v1.TokenVault",
        &env::var("CARGO_PKG_VERSION")?,
    )?;
    std::fs::write(
        out_dir.join("openapi.json"),
        serde_json::to_string_pretty(&document)? + "\n",
    )?;
    // The operator API is served on a Unix socket only; its descriptors stay
    // out of the set that reflection serves on the network port.
    tonic_prost_build::configure()
        .compile_protos(&["proto/tokenvault/admin/v1/admin.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=src/api/http/openapi_build.rs");
    Ok(())
}
