//! Why a Restream cannot be rendered.

/// Each names what is wrong and where (`spec.streams[0].path: ...`).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("the rendered data-plane config is invalid: {0}")]
    InvalidConfig(String),
    #[error("the Restream has no {0}")]
    MissingMetadata(&'static str),
}
