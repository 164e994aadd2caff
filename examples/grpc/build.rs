//! Generates the `jobs.Jobs` service's server and client from a description in Rust: no
//! `.proto` file, so no `protoc` on the machine that builds it.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("crate::{input}"))
            .output_type(format!("crate::{output}"))
            .codec_path("tonic_prost::ProstCodec")
            .build()
    };
    let jobs = Service::builder()
        .name("Jobs")
        .package("jobs")
        .method(method(
            "start_job",
            "StartJob",
            "StartJobRequest",
            "StartJobReply",
        ))
        .method(method("tasks", "Tasks", "TasksRequest", "TasksReply"))
        .build();
    Builder::new().compile(&[jobs]);
}
