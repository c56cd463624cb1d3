//! What an `image:` string names: a local path (with an optional `:TAG`) or a registry
//! reference in the usual `[host[:port]/]repository[:tag][@sha256:…]` form.
//!
//! As with docker, a first path component is a registry host when it has a `.` or a
//! `:` or is `localhost`; otherwise the image is on Docker Hub (`docker.io`, with
//! `library/` for one-component names). No tag and no digest means `latest`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::digest::Sha256Digest;
use super::error::ImageError;

/// Docker Hub, where unqualified names live.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Local { path: PathBuf, tag: Option<String> },
    Registry(RegistryRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]` as written (`docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Sha256Digest>,
}

impl RegistryRef {
    /// The host the API is served from.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Parses `image`. A path must be absolute; whether `PATH:TAG` is a path with a tag
    /// is decided by what exists on disk (a path containing `:` that exists wins).
    pub fn parse(image: &str) -> Result<ImageRef, ImageError> {
        let invalid = |why: String| ImageError::NotFound {
            image: image.to_owned(),
            why,
        };
        if image.starts_with("./") || image.starts_with("../") {
            return Err(invalid(
                "a local image must be an absolute path (manifests are applied from any directory)"
                    .into(),
            ));
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
        if let Some((base, tag)) = text.rsplit_once(':') {
            if !tag.is_empty() && !tag.contains('/') && Path::new(base).exists() {
                return ImageRef::Local {
                    path: PathBuf::from(base),
                    tag: Some(tag.to_owned()),
                };
            }
        }
    }
    ImageRef::Local {
        path: path.to_path_buf(),
        tag: None,
    }
}

fn parse_registry(image: &str) -> Result<RegistryRef, String> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest.parse::<Sha256Digest>()?)),
        None => (image, None),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag.to_owned())),
        _ => (rest, None),
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        Some(_) => (DOCKER_HUB.to_owned(), name.to_owned()),
        None => (DOCKER_HUB.to_owned(), format!("library/{name}")),
    };
    if repository.is_empty()
        || !repository.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && part.as_bytes()[0].is_ascii_alphanumeric()
        })
    {
        return Err(format!(
            "{image:?} is neither an absolute path nor a registry reference ([host[:port]/]repository[:tag][@sha256:…], lowercase repository)"
        ));
    }
    if let Some(tag) = &tag {
        let valid = tag.len() <= 128
            && tag.as_bytes()[0] != b'.'
            && tag.as_bytes()[0] != b'-'
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(format!("{tag:?} is not a valid image tag"));
        }
    }
    Ok(RegistryRef {
        registry,
        repository,
        tag,
        digest,
    })
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
