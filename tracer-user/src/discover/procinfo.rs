//! What the daemon knows about a traced process, read from `/proc` (never from the process).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

/// A Tango-related shared library mapped by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedLibrary {
    /// Path as the process sees it (inside its mount namespace).
    pub path: PathBuf,
    /// Version from the file name (`libtango-ddde0d83.so.10.3.3` → `10.3.3`), if any.
    pub version: Option<String>,
}

/// The Tango libraries a process maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TangoLibraries {
    pub omniorb: Option<MappedLibrary>,
    pub tango: Option<MappedLibrary>,
    pub zmq: Option<MappedLibrary>,
}

impl TangoLibraries {
    /// Classifies the file-backed mappings listed in `/proc/<pid>/maps` text.
    pub fn from_maps(maps: &str) -> Self {
        let mut libs = TangoLibraries::default();
        for line in maps.lines() {
            // address perms offset dev inode pathname
            let Some(path) = line.split_whitespace().nth(5) else {
                continue;
            };
            let Some(name) = Path::new(path).file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let slot = if name.starts_with("libomniORB4") {
                &mut libs.omniorb
            } else if name.starts_with("libtango.so") || name.starts_with("libtango-") {
                &mut libs.tango
            } else if name.starts_with("libzmq") {
                &mut libs.zmq
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(MappedLibrary { path: PathBuf::from(path), version: version_of(name) });
            }
        }
        libs
    }
}

/// `libx-hash.so.1.2.3` / `libx.so.1.2.3` → `1.2.3`.
fn version_of(file_name: &str) -> Option<String> {
    let (_, after) = file_name.split_once(".so.")?;
    (!after.is_empty()).then(|| after.to_string())
}

/// Facts about one process, gathered once when it becomes a target.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub cmdline: Vec<String>,
    /// The process's environment at exec time.
    pub environ: HashMap<String, String>,
    /// `(path, text)` of `<home of the effective uid>/.tangorc` then `/etc/tangorc`, as the
    /// process sees them (files that do not exist are left out).
    pub tangorc_files: Vec<(String, String)>,
    pub libraries: TangoLibraries,
}

impl ProcessInfo {
    /// Reads what `/proc/<pid>` tells; missing pieces stay empty (the process may be gone).
    pub fn read(proc_root: &Path, pid: u32) -> Self {
        let dir = proc_root.join(pid.to_string());
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        let cmdline = fs::read(dir.join("cmdline"))
            .map(|raw| split_nul(&raw).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
            .unwrap_or_default();
        let environ = fs::read(dir.join("environ")).map(|raw| parse_environ(&raw)).unwrap_or_default();
        let libraries = fs::read_to_string(dir.join("maps"))
            .map(|maps| TangoLibraries::from_maps(&maps))
            .unwrap_or_default();
        let tangorc_files = read_tangorc(&dir, effective_uid(&dir));
        ProcessInfo { pid, comm, cmdline, environ, tangorc_files, libraries }
    }

    /// Re-reads the mapped libraries (a library loaded by `dlopen` after the first look).
    pub fn refresh_libraries(&mut self, proc_root: &Path) {
        let maps = proc_root.join(self.pid.to_string()).join("maps");
        if let Ok(maps) = fs::read_to_string(maps) {
            let libs = TangoLibraries::from_maps(&maps);
            if libs.omniorb.is_some() || libs.tango.is_some() {
                self.libraries = libs;
            }
        }
    }

    /// A Tango setting as cppTango reads it: the environment first, then the tangorc files.
    pub fn tango_setting(&self, name: &str) -> Option<String> {
        if let Some(value) = self.environ.get(name) {
            return Some(value.clone());
        }
        self.tangorc_files.iter().find_map(|(_, text)| crate::configure::cpptango::tangorc_value(name, text))
    }

    /// `TANGO_HOST` as the process would use it.
    pub fn tango_host(&self) -> Option<String> {
        self.tango_setting("TANGO_HOST").filter(|h| !h.is_empty())
    }

    /// Major version of the libtango the process maps (cppTango ≥ 10 can trace itself).
    pub fn tango_major(&self) -> Option<u32> {
        self.tango_version().and_then(|v| v.split('.').next()?.parse().ok())
    }

    /// Version of the libtango the process maps.
    pub fn tango_version(&self) -> Option<&str> {
        self.libraries.tango.as_ref().and_then(|l| l.version.as_deref())
    }
}

fn split_nul(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == 0).filter(|s| !s.is_empty())
}

/// Parses `/proc/<pid>/environ` (NUL-separated `NAME=value`).
pub fn parse_environ(raw: &[u8]) -> HashMap<String, String> {
    split_nul(raw)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=')?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

fn effective_uid(dir: &Path) -> Option<u32> {
    let status = fs::read_to_string(dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Reads `<home of euid>/.tangorc` then `/etc/tangorc` through `/proc/<pid>/root`, so the files
/// are the ones the process sees in its own mount namespace.
fn read_tangorc(dir: &Path, euid: Option<u32>) -> Vec<(String, String)> {
    let root = dir.join("root");
    let mut files_read = Vec::new();
    let home = euid.and_then(|uid| home_of(&root, uid));
    let files = home
        .map(|h| PathBuf::from(format!("{}/.tangorc", h.trim_end_matches('/'))))
        .into_iter()
        .chain([PathBuf::from("/etc/tangorc")]);
    for file in files {
        let inside = root.join(file.strip_prefix("/").unwrap_or(&file));
        if let Ok(text) = fs::read_to_string(inside) {
            files_read.push((file.display().to_string(), text));
        }
    }
    files_read
}

fn home_of(root: &Path, uid: u32) -> Option<String> {
    let passwd = fs::read_to_string(root.join("etc/passwd")).ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(5).map(|h| h.to_string()))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wheel_and_debian_libraries() {
        let maps = "7f00-7f01 r-xp 00000000 fe:00 123 /venv/site-packages/pytango.libs/libomniORB4-1b55eb7f.so.3.4\n\
                    7f02-7f03 r-xp 00000000 fe:00 124 /venv/site-packages/pytango.libs/libtango-ddde0d83.so.10.3.3\n\
                    7f04-7f05 r-xp 00000000 fe:00 125 /usr/lib/x86_64-linux-gnu/libzmq.so.5.2.4\n\
                    7f06-7f07 rw-p 00000000 00:00 0 \n";
        let libs = TangoLibraries::from_maps(maps);
        assert_eq!(libs.omniorb.as_ref().and_then(|l| l.version.as_deref()), Some("3.4"));
        assert_eq!(libs.tango.as_ref().and_then(|l| l.version.as_deref()), Some("10.3.3"));
        assert_eq!(libs.zmq.as_ref().and_then(|l| l.version.as_deref()), Some("5.2.4"));
        let debian =
            TangoLibraries::from_maps("1-2 r-xp 0 fe:00 1 /usr/lib/x86_64-linux-gnu/libtango.so.9.3.4\n");
        assert_eq!(debian.tango.and_then(|l| l.version), Some("9.3.4".to_string()));
    }

    #[test]
    fn environment_beats_tangorc() {
        let info = ProcessInfo {
            environ: parse_environ(b"TANGO_HOST=a:1\0PATH=/bin\0"),
            tangorc_files: vec![("/etc/tangorc".into(), "TANGO_HOST=B:2\n".into())],
            ..Default::default()
        };
        assert_eq!(info.tango_host().as_deref(), Some("a:1"));
        let info = ProcessInfo {
            tangorc_files: vec![("/etc/tangorc".into(), "TANGO_HOST=B:2\n".into())],
            ..Default::default()
        };
        assert_eq!(
            info.tango_host().as_deref(),
            Some("b:2"),
            "tangorc lines are lowercased, as cppTango reads them"
        );
    }
}
