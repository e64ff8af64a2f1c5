//! A small ext4 filesystem on a loop device, for tests of what the broker does when its disk is
//! short (alarms) or full (log faults). Needs root; `make` says why it could not.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::unique;

/// Mounted for the test; unmounted and detached on drop. Made without reserved blocks, so the
/// free space a test sees is the free space the broker (root) can use.
pub struct SmallFilesystem {
    image: PathBuf,
    pub mount: PathBuf,
    device: String,
}

impl SmallFilesystem {
    pub fn make(size_bytes: u64) -> Result<SmallFilesystem, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("making a loop-device filesystem needs root".to_owned());
        }
        let root = std::env::temp_dir().join(unique("ringmq-disk"));
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let image = root.join("fs.img");
        let mount = root.join("mnt");
        std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
        let file = std::fs::File::create(&image).map_err(|e| e.to_string())?;
        file.set_len(size_bytes).map_err(|e| e.to_string())?;
        run(
            "mkfs.ext4",
            &["-q", "-F", "-m", "0", image.to_str().unwrap_or_default()],
        )?;
        let device = run(
            "losetup",
            &["--find", "--show", image.to_str().unwrap_or_default()],
        )?;
        let filesystem = SmallFilesystem {
            image,
            mount,
            device: device.trim().to_owned(),
        };
        run(
            "mount",
            &[
                &filesystem.device,
                filesystem.mount.to_str().unwrap_or_default(),
            ],
        )?;
        Ok(filesystem)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.mount.join("data")
    }

    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.mount)
    }

    /// Takes all but `leave_bytes` of the free space with a preallocated file (blocks really
    /// allocated, unlike a sparse one); `release_filler` gives it back.
    pub fn fill_leaving(&self, leave_bytes: u64) -> Result<(), String> {
        let take = self.free_bytes().saturating_sub(leave_bytes);
        let path = self.filler_path();
        let size = take.to_string();
        run(
            "fallocate",
            &["-l", &size, path.to_str().unwrap_or_default()],
        )
        .map(|_| ())
    }

    pub fn release_filler(&self) {
        let _ = std::fs::remove_file(self.filler_path());
    }

    fn filler_path(&self) -> PathBuf {
        self.mount.join("filler")
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = run("umount", &[self.mount.to_str().unwrap_or_default()]);
        let _ = run("losetup", &["-d", &self.device]);
        if let Some(root) = self.image.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn free_bytes(path: &Path) -> u64 {
    ringmq::alarm::probe::filesystem_free_bytes(path).unwrap_or(0)
}
