//! How the daemon's log lines look on standard error, chosen once at start.
//!
//! - **Terminal**: env_logger's usual form, in colour (`[time LEVEL target] message`).
//! - **Journal** (standard error is journald's stream: `JOURNAL_STREAM` names its device and
//!   inode): no time (journald adds its own) and no colour; every line starts with its syslog
//!   priority, `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace (the sd-daemon
//!   convention), so `journalctl -p warning` selects by level.
//! - **Plain** (a pipe or file of anything else): the terminal's form without colour.
//!
//! The level is `info` unless `RUST_LOG` says otherwise.

use std::{io::Write as _, sync::OnceLock};

/// The form of the log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    Terminal,
    Journal,
    Plain,
}

static FORM: OnceLock<Form> = OnceLock::new();

/// The form for a standard error that is a terminal or not, with device and inode `stderr`,
/// given `JOURNAL_STREAM` (`<device>:<inode>`). A `JOURNAL_STREAM` inherited by a process whose
/// standard error was redirected names another file, and is ignored.
pub fn choose(is_terminal: bool, stderr: Option<(u64, u64)>, journal_stream: Option<&str>) -> Form {
    let journal = journal_stream
        .and_then(|value| value.split_once(':'))
        .and_then(|(dev, ino)| Some((dev.trim().parse::<u64>().ok()?, ino.trim().parse::<u64>().ok()?)));
    match (journal, stderr) {
        (Some(journal), Some(stderr)) if journal == stderr => Form::Journal,
        _ if is_terminal => Form::Terminal,
        _ => Form::Plain,
    }
}

/// The syslog priority of a level (`sd-daemon(3)`).
pub fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One record in the journal's form: each line of the message carries the priority, since
/// journald reads every line as an entry of its own.
pub fn journal_lines(
    out: &mut impl std::io::Write,
    level: log::Level,
    target: &str,
    message: &str,
) -> std::io::Result<()> {
    let priority = priority(level);
    let mut lines = message.split('\n');
    let first = lines.next().unwrap_or_default();
    writeln!(out, "<{priority}>{level:<5} {target}: {first}")?;
    for line in lines {
        writeln!(out, "<{priority}>{line}")?;
    }
    Ok(())
}

/// Sets up the logger; call once, before anything logs.
pub fn init() {
    use std::io::IsTerminal as _;
    let stderr = std::io::stderr();
    let is_terminal = stderr.is_terminal();
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let form = choose(is_terminal, stderr_identity(), journal_stream.as_deref());
    let _ = FORM.set(form);
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    match form {
        Form::Terminal => {}
        Form::Plain => {
            builder.write_style(env_logger::WriteStyle::Never);
        }
        Form::Journal => {
            builder.write_style(env_logger::WriteStyle::Never).format(|buf, record| {
                journal_lines(buf, record.level(), record.target(), &record.args().to_string())
            });
        }
    }
    builder.init();
}

/// The form chosen by [`init`] (plain before it).
pub fn form() -> Form {
    FORM.get().copied().unwrap_or(Form::Plain)
}

/// Writes the error that ends a command, in the log's form (an error priority under journald).
pub fn fatal(error: &anyhow::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = match form() {
        Form::Journal => journal_lines(&mut stderr, log::Level::Error, "tango-tracer", &format!("{error:#}")),
        Form::Terminal | Form::Plain => writeln!(stderr, "tango-tracer: {error:#}"),
    };
}

/// Device and inode of standard error.
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self/fd/2 follows to the open file itself, also for pipes and sockets.
    std::fs::metadata("/proc/self/fd/2").ok().map(|meta| (meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_journal_form_only_where_journal_stream_names_standard_error() {
        assert_eq!(choose(false, Some((8, 1234)), Some("8:1234")), Form::Journal);
        // Inherited by a process whose standard error went elsewhere.
        assert_eq!(choose(false, Some((8, 99)), Some("8:1234")), Form::Plain);
        assert_eq!(choose(true, Some((8, 99)), Some("8:1234")), Form::Terminal);
        assert_eq!(choose(false, Some((8, 1234)), Some("garbage")), Form::Plain);
        assert_eq!(choose(false, Some((8, 1234)), None), Form::Plain);
        assert_eq!(choose(true, None, None), Form::Terminal);
    }

    #[test]
    fn journal_lines_carry_the_syslog_priority_and_no_time_or_colour() {
        let mut out = Vec::new();
        journal_lines(&mut out, log::Level::Warn, "tango_tracer::run", "pid 4: no ZMQ uprobe").unwrap();
        journal_lines(&mut out, log::Level::Error, "tango-tracer", "first\nsecond").unwrap();
        journal_lines(&mut out, log::Level::Info, "t", "ready").unwrap();
        journal_lines(&mut out, log::Level::Debug, "t", "d").unwrap();
        journal_lines(&mut out, log::Level::Trace, "t", "t").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "<4>WARN  tango_tracer::run: pid 4: no ZMQ uprobe\n<3>ERROR tango-tracer: first\n<3>second\n\
             <6>INFO  t: ready\n<7>DEBUG t: d\n<7>TRACE t: t\n"
        );
    }
}
