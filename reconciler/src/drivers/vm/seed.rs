//! The cloud-init NoCloud seed: a small FAT image labelled `cidata` holding `user-data`,
//! `meta-data` and, when declared, `network-config`, built in memory (the `fatfs` crate)
//! and attached read-only as a virtio disk with the serial `cidata`.
//!
//! `meta-data` defaults to `instance-id` and `local-hostname` both set to the VM's name,
//! so cloud-init in the guest has an instance to key its once-per-instance work on.
//! `user-data` defaults to empty (cloud-init then only applies the meta-data).
//!
//! The image is a pure function of the VM's name and its `cloudInit` block (FAT
//! timestamps are the fixed epoch of the `fatfs` crate without a clock), so rewriting it
//! before every start changes nothing when the declaration did not change.

use std::io::{Cursor, Write};

use crate::drivers::vm::CloudInit;

/// The volume label cloud-init's NoCloud source looks for.
pub const SEED_LABEL: &[u8; 11] = b"cidata     ";
/// The serial of the seed's virtio disk.
pub const SEED_SERIAL: &str = "cidata";

/// The smallest image: FAT12 with room for the directory and a few clusters.
const MIN_IMAGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("building the cloud-init seed image (FAT)")]
pub struct SeedError {
    #[source]
    cause: std::io::Error,
}

/// The files of the seed, in the order they are written.
pub fn seed_files(vm: &str, cloud: &CloudInit) -> Vec<(&'static str, String)> {
    let meta_data = cloud
        .meta_data
        .clone()
        .unwrap_or_else(|| format!("instance-id: {vm}\nlocal-hostname: {vm}\n"));
    let mut files = vec![
        ("meta-data", meta_data),
        ("user-data", cloud.user_data.clone().unwrap_or_default()),
    ];
    if let Some(network) = &cloud.network_config {
        files.push(("network-config", network.clone()));
    }
    files
}

/// The seed image of `vm`.
pub fn seed_image(vm: &str, cloud: &CloudInit) -> Result<Vec<u8>, SeedError> {
    let files = seed_files(vm, cloud);
    let content: usize = files.iter().map(|(_, text)| text.len()).sum();
    let size = MIN_IMAGE
        .max(content * 2 + (256 << 10))
        .next_multiple_of(1 << 20);
    build(&files, size).map_err(|cause| SeedError { cause })
}

fn build(files: &[(&str, String)], size: usize) -> std::io::Result<Vec<u8>> {
    let mut image = Cursor::new(vec![0u8; size]);
    fatfs::format_volume(
        &mut image,
        fatfs::FormatVolumeOptions::new().volume_label(*SEED_LABEL),
    )?;
    {
        let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            for (name, text) in files {
                let mut file = root.create_file(name)?;
                file.truncate()?;
                file.write_all(text.as_bytes())?;
                file.flush()?;
            }
        }
        fs.unmount()?;
    }
    Ok(image.into_inner())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn read_back(image: Vec<u8>) -> (String, Vec<(String, String)>) {
        let mut cursor = Cursor::new(image);
        let fs = fatfs::FileSystem::new(&mut cursor, fatfs::FsOptions::new()).unwrap();
        let label = fs.volume_label();
        let mut files = Vec::new();
        for entry in fs.root_dir().iter() {
            let entry = entry.unwrap();
            let mut text = String::new();
            entry.to_file().read_to_string(&mut text).unwrap();
            files.push((entry.file_name(), text));
        }
        (label, files)
    }

    #[test]
    fn the_seed_is_a_cidata_fat_volume_with_the_declared_files() {
        let cloud = CloudInit {
            user_data: Some("#cloud-config\nhostname: web\n".into()),
            meta_data: None,
            network_config: Some("version: 2\n".into()),
        };
        let image = seed_image("web", &cloud).unwrap();
        assert_eq!(image.len() % 512, 0);
        let (label, files) = read_back(image);
        assert_eq!(label.trim_end(), "cidata");
        assert_eq!(
            files,
            [
                (
                    "meta-data".to_owned(),
                    "instance-id: web\nlocal-hostname: web\n".to_owned()
                ),
                (
                    "user-data".to_owned(),
                    "#cloud-config\nhostname: web\n".to_owned()
                ),
                ("network-config".to_owned(), "version: 2\n".to_owned()),
            ]
        );
    }

    #[test]
    fn the_same_declaration_gives_the_same_bytes_and_large_content_fits() {
        let cloud = CloudInit {
            user_data: Some("x".repeat(3 << 20)),
            meta_data: Some("instance-id: big\n".into()),
            network_config: None,
        };
        let first = seed_image("big", &cloud).unwrap();
        assert_eq!(first, seed_image("big", &cloud).unwrap());
        let (_, files) = read_back(first);
        assert_eq!(files[1].1.len(), 3 << 20);
    }
}
