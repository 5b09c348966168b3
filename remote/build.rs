// Generates the gRPC messages and service from proto/remote.proto (needs `protoc`,
// Debian's protobuf-compiler, installed by scripts/install-deps.sh).
fn main() {
    println!("cargo:rerun-if-changed=proto/remote.proto");
    tonic_prost_build::compile_protos("proto/remote.proto").expect("compiling proto/remote.proto");
}
