//! Why a channel could not be rendered. Every variant is a RENDER_FAILED outcome and a dead
//! letter of class `render`; the text is the reason operators read.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no template {template_id}/{channel} for locale {locale} (tried {})", tried.join(", "))]
    MissingTemplate {
        template_id: String,
        channel: &'static str,
        locale: String,
        tried: Vec<String>,
    },
    #[error("{field}: missing variable(s) {}", names.join(", "))]
    MissingVariable {
        field: &'static str,
        names: Vec<String>,
    },
    #[error("{field}: template error: {message}")]
    Syntax {
        field: &'static str,
        message: String,
    },
    #[error("{channel} over limit: {detail}")]
    OverLimit {
        channel: &'static str,
        detail: String,
    },
}
