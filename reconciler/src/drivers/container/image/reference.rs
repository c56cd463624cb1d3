//! What an `image:` string names: a local path (with an optional `:TAG`) or a registry
//! reference. The syntax is the model's ([`crate::model::image_reference`]), so the
//! validator refuses what this refuses; what is decided here is what needs the host:
//! whether a path's `:TAG` is part of its name.

use std::path::{Path, PathBuf};

use super::error::ImageError;
pub use crate::model::image_reference::{DOCKER_HUB, DOCKER_HUB_API, RegistryRef};
use crate::model::image_reference::{parse_registry, relative_path_problem};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Local { path: PathBuf, tag: Option<String> },
    Registry(RegistryRef),
}

impl ImageRef {
    /// Parses `image`. A path must be absolute; whether `PATH:TAG` is a path with a tag
    /// is decided by what exists on disk (a path containing `:` that exists wins).
    pub fn parse(image: &str) -> Result<ImageRef, ImageError> {
        let invalid = |why: String| ImageError::NotFound {
            image: image.to_owned(),
            why,
        };
        if let Some(why) = relative_path_problem(image) {
            return Err(invalid(why));
        }
        if image.starts_with('/') {
            return Ok(local(Path::new(image)));
        }
        parse_registry(image)
            .map(ImageRef::Registry)
            .map_err(invalid)
    }
}

fn local(path: &Path) -> ImageRef {
    if !path.exists() {
        let text = path.to_string_lossy();
        if let Some((base, tag)) = text.rsplit_once(':')
            && !tag.is_empty()
            && !tag.contains('/')
            && Path::new(base).exists()
        {
            return ImageRef::Local {
                path: PathBuf::from(base),
                tag: Some(tag.to_owned()),
            };
        }
    }
    ImageRef::Local {
        path: path.to_path_buf(),
        tag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(image: &str) -> RegistryRef {
        match ImageRef::parse(image).unwrap() {
            ImageRef::Registry(reference) => reference,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn registry_references_follow_dockers_rules() {
        let r = registry("registry.example:5000/app:1.2");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("registry.example:5000", "app", Some("1.2"))
        );
        assert_eq!(r.manifest_reference(), "1.2");
        let hex = "a".repeat(64);
        let r = registry(&format!("127.0.0.1:5000/team/app@sha256:{hex}"));
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.manifest_reference(), format!("sha256:{hex}"));
        let r = registry("busybox");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/busybox")
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(registry("localhost/app").registry, "localhost");
        assert_eq!(registry("user/app").registry, "docker.io");
        assert!(ImageRef::parse("Upper/Case").is_err());
        assert!(ImageRef::parse("app@sha512:abc").is_err());
        assert!(ImageRef::parse("./relative").is_err());
    }

    #[test]
    fn a_tag_on_a_path_is_split_only_when_the_path_without_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        let with_tag = format!("{}:v1", layout.display());
        assert_eq!(
            ImageRef::parse(&with_tag).unwrap(),
            ImageRef::Local {
                path: layout.clone(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse(&layout.display().to_string()).unwrap(),
            ImageRef::Local {
                path: layout,
                tag: None
            }
        );
    }
}
