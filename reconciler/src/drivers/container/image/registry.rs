//! Pulling from an OCI registry (the distribution API). Not in this build yet.

use super::PreparedImage;
use super::error::ImageError;
use super::reference::RegistryRef;
use super::store::ImageStore;

/// Pulls `reference` into `store`.
pub fn pull(
    _store: &ImageStore,
    image: &str,
    reference: &RegistryRef,
) -> Result<PreparedImage, ImageError> {
    Err(ImageError::Unsupported {
        image: image.to_owned(),
        what: format!("pulling {reference} from a registry"),
        why: "this build imports local images only".into(),
    })
}
