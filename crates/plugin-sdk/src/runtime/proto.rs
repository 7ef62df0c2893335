//! Code generated from `proto/` by `build.rs`. The modules mirror the protobuf packages so
//! that cross-package references (`super::logical::Entity`) resolve.
#![allow(clippy::all, missing_docs, clippy::pedantic)]

pub mod pb {
    tonic::include_proto!("pb");
}

pub mod logical {
    tonic::include_proto!("logical");
}

pub mod plugin {
    tonic::include_proto!("plugin");
}

pub mod pluginutil {
    pub mod multiplexing {
        tonic::include_proto!("pluginutil.multiplexing");
    }
}
