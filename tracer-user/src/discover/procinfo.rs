//! What the daemon knows about a traced process: copied by the kernel the moment the process
//! became a target (see `records::CapturedFacts`), else read from `/proc` (never from the process).
//! A fact that could not be read is left out and counted by cause, never guessed.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::probe::record::{CapturedBlock, CapturedFacts};

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
    /// Files a library under its name: `libomniORB4…`, `libtango.so…`/`libtango-…`, `libzmq…`.
    fn slot(&mut self, file_name: &str) -> Option<&mut Option<MappedLibrary>> {
        if file_name.starts_with("libomniORB4") {
            Some(&mut self.omniorb)
        } else if file_name.starts_with("libtango.so") || file_name.starts_with("libtango-") {
            Some(&mut self.tango)
        } else if file_name.starts_with("libzmq") {
            Some(&mut self.zmq)
        } else {
            None
        }
    }

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
            let Some(slot) = libs.slot(name) else {
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
    /// Inode of the process's mount namespace, when known.
    pub mnt_ns: Option<u32>,
    /// Inode of the process's network namespace (the host it belongs to), when known.
    pub net_ns: Option<u32>,
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
        let (tangorc_files, _) = read_tangorc(&dir.join("root"), effective_uid(&dir));
        let mnt_ns = mount_namespace(proc_root, pid);
        let net_ns = net_namespace(proc_root, pid);
        ProcessInfo { pid, comm, cmdline, environ, tangorc_files, libraries, mnt_ns, net_ns }
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

/// Reads `<home of euid>/.tangorc` then `/etc/tangorc` under `root` (`/proc/<pid>/root`, so the
/// files are the ones the process sees in its own mount namespace, or a root with the same files).
/// The flag says whether the passwd database was readable.
fn read_tangorc(root: &Path, euid: Option<u32>) -> (Vec<(String, String)>, bool) {
    let mut files_read = Vec::new();
    let passwd = fs::read_to_string(root.join("etc/passwd")).ok();
    let home = euid.zip(passwd.as_deref()).and_then(|(uid, passwd)| home_of(passwd, uid));
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
    (files_read, passwd.is_some())
}

/// The home directory of `uid` in passwd text (as `getpwuid` would find it).
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields.get(5).map(|h| h.to_string()))?
    })
}

/// `/proc/<pid>/ns/mnt` is a link to `mnt:[<inode>]`.
fn mount_namespace(proc_root: &Path, pid_or_self: impl std::fmt::Display) -> Option<u32> {
    namespace(proc_root, pid_or_self, "mnt")
}

/// `/proc/<pid>/ns/net` is a link to `net:[<inode>]`.
pub fn net_namespace(proc_root: &Path, pid_or_self: impl std::fmt::Display) -> Option<u32> {
    namespace(proc_root, pid_or_self, "net")
}

fn namespace(proc_root: &Path, pid_or_self: impl std::fmt::Display, kind: &str) -> Option<u32> {
    let link = fs::read_link(proc_root.join(pid_or_self.to_string()).join("ns").join(kind)).ok()?;
    let text = link.to_str()?;
    text.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
}

/// Why a fact about a process is missing (see [`FactReader::losses`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactLoss {
    /// The environment was longer than the kernel copies and the process was gone: only its
    /// complete first entries are known.
    EnvironmentTruncated,
    /// The kernel could not read the environment and the process was gone.
    EnvironmentUnreadable,
    CmdlineTruncated,
    CmdlineUnreadable,
    /// The kernel could not read the effective uid: no `~/.tangorc`.
    EuidUnreadable,
    /// The passwd database the process sees was not readable: no `~/.tangorc`.
    PasswdUnreadable,
    /// The process was gone and saw other files than the daemon: no tangorc file.
    TangorcProcessGone,
    /// The process ended and the path of the libtango it used was never seen (it mapped
    /// libtango: libzmq, which only libtango brings to a Tango process, was seen).
    LibtangoPathUnknown,
}

impl FactLoss {
    pub const ALL: [FactLoss; 8] = [
        FactLoss::EnvironmentTruncated,
        FactLoss::EnvironmentUnreadable,
        FactLoss::CmdlineTruncated,
        FactLoss::CmdlineUnreadable,
        FactLoss::EuidUnreadable,
        FactLoss::PasswdUnreadable,
        FactLoss::TangorcProcessGone,
        FactLoss::LibtangoPathUnknown,
    ];

    /// The cause as the daemon's loss report names it.
    pub fn cause(self) -> &'static str {
        match self {
            FactLoss::EnvironmentTruncated => "environment_not_read_past_8_kib_process_gone",
            FactLoss::EnvironmentUnreadable => "environment_not_read",
            FactLoss::CmdlineTruncated => "cmdline_not_read_past_2_kib_process_gone",
            FactLoss::CmdlineUnreadable => "cmdline_not_read",
            FactLoss::EuidUnreadable => "euid_not_read_no_home_tangorc",
            FactLoss::PasswdUnreadable => "passwd_not_read_no_home_tangorc",
            FactLoss::TangorcProcessGone => "tangorc_not_read_process_gone_other_mount_namespace",
            FactLoss::LibtangoPathUnknown => "libtango_path_not_read",
        }
    }
}

/// Builds [`ProcessInfo`]s from what the kernel copied and counts what could not be read.
#[derive(Debug)]
pub struct FactReader {
    /// `None` where there is no `/proc` to read (replay of a recorded session).
    proc_root: Option<PathBuf>,
    /// The daemon's own mount namespace: a process that shared it saw the daemon's files.
    own_mnt_ns: Option<u32>,
    /// Where the daemon sees those files (`/`).
    own_root: PathBuf,
    losses: [u64; FactLoss::ALL.len()],
}

impl FactReader {
    pub fn new(proc_root: Option<&Path>) -> Self {
        FactReader {
            proc_root: proc_root.map(Path::to_path_buf),
            own_mnt_ns: proc_root.and_then(|root| mount_namespace(root, "self")),
            own_root: PathBuf::from("/"),
            losses: [0; FactLoss::ALL.len()],
        }
    }

    /// A process the kernel has just made a target: the kernel's copy first; `/proc` only for
    /// what the record cannot carry (tangorc files, a block longer than the copy).
    /// A forked child inherits its parent's facts.
    pub fn from_captured(&mut self, facts: &CapturedFacts, parent: Option<&ProcessInfo>) -> ProcessInfo {
        if let Some(parent) = parent {
            // A child cloned into a namespace of its own says so in its facts.
            return ProcessInfo {
                pid: facts.pid,
                comm: facts.comm.clone(),
                net_ns: facts.net_ns.or(parent.net_ns),
                ..parent.clone()
            };
        }
        let dir = self.live_dir(facts.pid, facts.mnt_ns);
        let environ = self.block(
            &facts.environ,
            dir.as_ref().map(|d| d.join("environ")),
            FactLoss::EnvironmentTruncated,
        );
        let environ = environ.map(|raw| parse_environ(&raw)).unwrap_or_else(|| {
            self.count(FactLoss::EnvironmentUnreadable);
            HashMap::new()
        });
        let cmdline =
            self.block(&facts.cmdline, dir.as_ref().map(|d| d.join("cmdline")), FactLoss::CmdlineTruncated);
        let cmdline = cmdline
            .map(|raw| split_nul(&raw).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
            .unwrap_or_else(|| {
                self.count(FactLoss::CmdlineUnreadable);
                Vec::new()
            });
        let mut info = ProcessInfo {
            pid: facts.pid,
            comm: facts.comm.clone(),
            cmdline,
            environ,
            mnt_ns: facts.mnt_ns,
            net_ns: facts.net_ns,
            ..Default::default()
        };
        match self.root_of(&info) {
            Some(root) => {
                if facts.euid.is_none() {
                    self.count(FactLoss::EuidUnreadable);
                }
                let (files, passwd_read) = read_tangorc(&root, facts.euid);
                if !passwd_read && facts.euid.is_some() {
                    self.count(FactLoss::PasswdUnreadable);
                }
                info.tangorc_files = files;
            }
            None => self.count(FactLoss::TangorcProcessGone),
        }
        info
    }

    /// A library the process opened: the last path of a name wins (the one that opened). The
    /// version comes from the file a symbolic link names (`libtango.so.9` → `9.3.4`) when the
    /// process's files can still be seen, else from the name as opened.
    pub fn note_library(&self, info: &mut ProcessInfo, path: &Path) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let resolved = self.root_of(info).and_then(|root| resolve_link(&root, path));
        let version_name = resolved.as_deref().and_then(|p| p.file_name()).and_then(|n| n.to_str());
        let version = version_of(version_name.unwrap_or(name)).or_else(|| version_of(name));
        if let Some(slot) = info.libraries.slot(name) {
            *slot = Some(MappedLibrary { path: path.to_path_buf(), version });
        }
    }

    /// `path` as the daemon can open it: through `/proc/<pid>/root` while the process lives,
    /// else directly when the process saw the daemon's files.
    pub fn path_in_view(&self, info: &ProcessInfo, path: &Path) -> Option<PathBuf> {
        let root = self.root_of(info)?;
        Some(root.join(path.strip_prefix("/").unwrap_or(path)))
    }

    /// The process ended (exit or exec): counts what was never learnt. A process with omniORB
    /// alone has no libtango to learn; one with libzmq (loaded for libtango) had one.
    pub fn process_ended(&mut self, info: &ProcessInfo) {
        if info.libraries.tango.is_none() && info.libraries.zmq.is_some() {
            self.count(FactLoss::LibtangoPathUnknown);
        }
    }

    /// `(cause, total)` of every fact left out so far, all causes listed.
    pub fn losses(&self) -> Vec<(&'static str, u64)> {
        FactLoss::ALL.iter().zip(self.losses).map(|(loss, total)| (loss.cause(), total)).collect()
    }

    fn count(&mut self, loss: FactLoss) {
        if let Some(total) = self.losses.get_mut(loss as usize) {
            *total += 1;
        }
    }

    /// `/proc/<pid>` while it still shows the process: same pid, same mount namespace.
    fn live_dir(&self, pid: u32, mnt_ns: Option<u32>) -> Option<PathBuf> {
        let proc_root = self.proc_root.as_ref()?;
        (mnt_ns.is_some() && mount_namespace(proc_root, pid) == mnt_ns)
            .then(|| proc_root.join(pid.to_string()))
    }

    /// Where the files the process sees are: its root while it lives, else the daemon's own root
    /// if it shared the daemon's mount namespace.
    fn root_of(&self, info: &ProcessInfo) -> Option<PathBuf> {
        if let Some(dir) = self.live_dir(info.pid, info.mnt_ns) {
            Some(dir.join("root"))
        } else if info.mnt_ns.is_some() && info.mnt_ns == self.own_mnt_ns {
            Some(self.own_root.clone())
        } else {
            None
        }
    }

    /// The whole block: the kernel's copy when complete; else `/proc` (`proc_file`, given while
    /// the process lives); else the complete entries of the copy (counted as `truncated`).
    /// `None` when unreadable.
    fn block(
        &mut self,
        block: &CapturedBlock,
        proc_file: Option<PathBuf>,
        truncated: FactLoss,
    ) -> Option<Vec<u8>> {
        if !block.unreadable && !block.truncated() {
            return Some(block.bytes.clone());
        }
        if let Some(Ok(raw)) = proc_file.map(fs::read) {
            return Some(raw);
        }
        if block.unreadable {
            return None;
        }
        self.count(truncated);
        // The last entry was cut: keep only those that end with their NUL.
        let complete = block.bytes.iter().rposition(|b| *b == 0).map_or(0, |end| end + 1);
        Some(block.bytes.get(..complete).unwrap_or_default().to_vec())
    }
}

/// Follows symbolic links of the file `path` (its last component) under `root`.
fn resolve_link(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..8 {
        let inside = root.join(current.strip_prefix("/").unwrap_or(&current));
        let Ok(target) = fs::read_link(&inside) else {
            return fs::symlink_metadata(&inside).is_ok().then_some(current);
        };
        current = match current.parent() {
            Some(dir) if target.is_relative() => dir.join(target),
            _ => target,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests"
    )]

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

    /// A directory tree of files for one test, removed when dropped.
    struct Tree(PathBuf);

    impl Tree {
        fn new(test: &str) -> Tree {
            let dir =
                std::env::temp_dir().join(format!("tango-tracer-procinfo-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("creating a test directory");
            Tree(dir)
        }

        fn file(&self, path: &str, text: &str) -> &Tree {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().expect("a parent")).expect("creating directories");
            fs::write(path, text).expect("writing a test file");
            self
        }

        fn link(&self, path: &str, target: &str) -> &Tree {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().expect("a parent")).expect("creating directories");
            std::os::unix::fs::symlink(target, path).expect("creating a symbolic link");
            self
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const OWN_NS: u32 = 4_026_531_832;
    const OTHER_NS: u32 = 4_026_532_999;

    /// A `/proc` holding only the daemon's own mount namespace, and the daemon's own files:
    /// alice (uid 1000) has a `~/.tangorc`, `/etc/tangorc` names another host.
    fn host(test: &str) -> (Tree, Tree, FactReader) {
        let proc = Tree::new(&format!("{test}-proc"));
        proc.link("self/ns/mnt", &format!("mnt:[{OWN_NS}]"));
        let root = Tree::new(&format!("{test}-root"));
        root.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
            .file("home/alice/.tangorc", "TANGO_TELEMETRY_ENABLE=on\n")
            .file("etc/tangorc", "TANGO_HOST=vm:10000\n")
            .file("lib/libtango.so.9.3.4", "")
            .link("lib/libtango.so.9", "libtango.so.9.3.4");
        let mut reader = FactReader::new(Some(&proc.0));
        reader.own_root = root.0.clone();
        (proc, root, reader)
    }

    fn captured(pid: u32, mnt_ns: Option<u32>, environ: &[u8], environ_len: usize) -> CapturedFacts {
        CapturedFacts {
            pid,
            comm: "python".into(),
            euid: Some(1000),
            mnt_ns,
            cmdline: CapturedBlock { bytes: b"python\0client.py\0".to_vec(), len: 17, unreadable: false },
            environ: CapturedBlock { bytes: environ.to_vec(), len: environ_len as u32, unreadable: false },
            ..Default::default()
        }
    }

    fn loss(reader: &FactReader, loss: FactLoss) -> u64 {
        reader.losses().iter().find(|(cause, _)| *cause == loss.cause()).map_or(0, |(_, n)| *n)
    }

    #[test]
    fn a_gone_process_is_known_by_what_the_kernel_copied() {
        let (_proc, _root, mut reader) = host("gone");
        let env = b"TANGO_HOST=127.0.0.1:4000\0TANGO_TELEMETRY_ENABLE=off\0";
        let info = reader.from_captured(&captured(77, Some(OWN_NS), env, env.len()), None);
        assert_eq!(info.tango_host().as_deref(), Some("127.0.0.1:4000"), "never /etc/tangorc's vm:10000");
        assert_eq!(info.environ.get("TANGO_TELEMETRY_ENABLE").map(String::as_str), Some("off"));
        assert_eq!(info.cmdline, ["python", "client.py"]);
        // It shared the daemon's mount namespace: its tangorc files are the daemon's, the home
        // directory the one passwd gives its effective uid.
        let files: Vec<&str> = info.tangorc_files.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(files, ["/home/alice/.tangorc", "/etc/tangorc"]);
        // Its library, through the daemon's own files: the version of the file the link names.
        let mut info = info;
        reader.note_library(&mut info, Path::new("/lib/libtango.so.9"));
        assert_eq!(info.tango_version(), Some("9.3.4"));
        assert_eq!(
            info.libraries.tango.as_ref().map(|l| l.path.clone()),
            Some(PathBuf::from("/lib/libtango.so.9"))
        );
        assert!(reader.losses().iter().all(|(_, n)| *n == 0), "{:?}", reader.losses());
    }

    #[test]
    fn a_gone_process_that_saw_other_files_has_no_tangorc_and_that_is_counted() {
        let (_proc, _root, mut reader) = host("other-ns");
        let env = b"TANGO_HOST=127.0.0.1:4000\0";
        let mut info = reader.from_captured(&captured(78, Some(OTHER_NS), env, env.len()), None);
        assert!(info.tangorc_files.is_empty(), "{:?}", info.tangorc_files);
        assert_eq!(loss(&reader, FactLoss::TangorcProcessGone), 1);
        // Its library version is what the name says, not the daemon's file.
        reader.note_library(&mut info, Path::new("/lib/libtango.so.9"));
        assert_eq!(info.tango_version(), Some("9"));
        reader.process_ended(&info);
        assert_eq!(loss(&reader, FactLoss::LibtangoPathUnknown), 0);
        // omniORB alone: no libtango to learn.
        let mut omniorb_only = ProcessInfo::default();
        reader.note_library(&mut omniorb_only, Path::new("/lib/libomniORB4.so.2"));
        reader.process_ended(&omniorb_only);
        assert_eq!(loss(&reader, FactLoss::LibtangoPathUnknown), 0);
        // libzmq came with a libtango whose path was never seen.
        let mut tango_unseen = omniorb_only;
        reader.note_library(&mut tango_unseen, Path::new("/lib/libzmq.so.5"));
        reader.process_ended(&tango_unseen);
        assert_eq!(loss(&reader, FactLoss::LibtangoPathUnknown), 1);
    }

    #[test]
    fn a_truncated_environment_keeps_complete_entries_or_is_read_whole_while_alive() {
        let (proc, _root, mut reader) = host("truncated");
        let cut = b"TANGO_HOST=127.0.0.1:4000\0PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME=cl";
        let info = reader.from_captured(&captured(79, Some(OWN_NS), cut, cut.len() + 10), None);
        assert_eq!(info.environ.len(), 1, "the cut entry is left out: {:?}", info.environ);
        assert_eq!(info.tango_host().as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(loss(&reader, FactLoss::EnvironmentTruncated), 1);

        // Alive (same pid, same namespace in /proc): the whole block from /proc, its own root.
        proc.link("80/ns/mnt", &format!("mnt:[{OTHER_NS}]"))
            .file(
                "80/environ",
                "TANGO_HOST=127.0.0.1:4000\0PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME=client-80\0",
            )
            .file("80/root/etc/tangorc", "TANGO_HOST=inside:1\n");
        let info = reader.from_captured(&captured(80, Some(OTHER_NS), cut, cut.len() + 10), None);
        assert_eq!(
            info.environ.get("PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME").map(String::as_str),
            Some("client-80")
        );
        assert_eq!(info.tangorc_files, [("/etc/tangorc".to_string(), "TANGO_HOST=inside:1\n".to_string())]);
        assert_eq!(loss(&reader, FactLoss::EnvironmentTruncated), 1, "not counted again");
        assert_eq!(loss(&reader, FactLoss::PasswdUnreadable), 1, "its root has no passwd: no ~/.tangorc");
    }

    #[test]
    fn unreadable_blocks_are_left_out_and_counted() {
        let (_proc, _root, mut reader) = host("unreadable");
        let mut facts = captured(81, None, b"", 0);
        facts.environ.unreadable = true;
        facts.euid = None;
        let info = reader.from_captured(&facts, None);
        assert!(info.environ.is_empty() && info.tangorc_files.is_empty());
        assert_eq!(loss(&reader, FactLoss::EnvironmentUnreadable), 1);
        assert_eq!(loss(&reader, FactLoss::TangorcProcessGone), 1, "no namespace known: no root to read");
    }

    #[test]
    fn a_forked_child_inherits_its_parents_facts() {
        let (_proc, _root, mut reader) = host("fork");
        let env = b"TANGO_HOST=127.0.0.1:4000\0";
        let mut parent = reader.from_captured(&captured(90, Some(OWN_NS), env, env.len()), None);
        reader.note_library(&mut parent, Path::new("/lib/libtango.so.9"));
        let child_facts = CapturedFacts { parent: Some(90), ..captured(91, Some(OWN_NS), b"", 0) };
        let child = reader.from_captured(&child_facts, Some(&parent));
        assert_eq!(child.pid, 91);
        assert_eq!(child.tango_host().as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(child.tango_version(), Some("9.3.4"));
        assert_eq!(child.tangorc_files, parent.tangorc_files);
    }
}
