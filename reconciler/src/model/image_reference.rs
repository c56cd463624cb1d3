//! The syntax of a container's `image:`: an absolute path (a local OCI layout, archive or
//! rootfs), or a registry reference in the usual
//! `[host[:port]/]repository[:tag][@sha256:…]` form. Pure, so the validator refuses
//! exactly what the container driver's image resolver would refuse, before anything is
//! applied.
//!
//! As with docker, a first path component is a registry host when it has a `.` or a
//! `:` or is `localhost`; otherwise the image is on Docker Hub (`docker.io`, with
//! `library/` for one-component names). No tag and no digest means `latest`.
//! Repository components are lowercase; tags are at most 128 of `[A-Za-z0-9_.-]`, not
//! starting with `.` or `-`; a digest is `sha256:` and 64 lowercase hex digits.

use std::fmt;

use super::Sha256Digest;

/// Docker Hub, where unqualified names live.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Whether `image` can name an image at all; `Err` says why not. A path must be absolute
/// (manifests are applied from any directory); anything else must be a registry
/// reference.
pub fn check_image(image: &str) -> Result<(), String> {
    if let Some(why) = relative_path_problem(image) {
        return Err(why);
    }
    if image.starts_with('/') {
        return Ok(());
    }
    parse_registry(image).map(|_| ())
}

/// Why `image` is refused as a relative path, if it is written as one.
pub fn relative_path_problem(image: &str) -> Option<String> {
    (image.starts_with("./") || image.starts_with("../")).then(|| {
        "a local image must be an absolute path (manifests are applied from any directory)"
            .to_owned()
    })
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

/// Parses a registry reference (not a path).
pub fn parse_registry(image: &str) -> Result<RegistryRef, String> {
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
            "{} is neither an absolute path nor a registry reference ([host[:port]/]repository[:tag][@sha256:…], lowercase repository)",
            super::quoted(image)
        ));
    }
    if let Some(tag) = &tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.as_bytes()[0] != b'.'
            && tag.as_bytes()[0] != b'-'
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !valid {
            return Err(format!("{} is not a valid image tag", super::quoted(tag)));
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

    #[test]
    fn images_are_absolute_paths_or_registry_references() {
        for good in [
            "/srv/images/app",
            "busybox",
            "registry.example:5000/team/app:1.2",
            "localhost/app",
        ] {
            assert_eq!(check_image(good), Ok(()), "{good}");
        }
        for bad in [
            "UPPER/Case:tag",
            "app:",
            "app:-x",
            "./relative",
            "../up",
            "app@sha512:abcd",
            "a//b",
        ] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
    }
}
