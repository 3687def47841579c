//! The mount-helper form: `regfs SOURCE MOUNTPOINT [-o opt,opt...]`, as `mount.fuse3` runs
//! the program of a `fuse.regfs` filesystem for `mount -t fuse.regfs` and `/etc/fstab`.
//! Turned into the arguments of `regfs mount` here, as pure logic, so clap then checks the
//! values exactly as it does for the flags.

use std::ffi::OsString;

/// Options fstab users write for every filesystem, which say nothing to regfs: mount(8),
/// systemd or the kernel act on them, or they are the defaults anyway.
const IGNORED: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "async",
    "sync",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "silent",
    "loud",
];

/// Flags of `regfs mount` that an option names without a value.
const FLAGS: &[(&str, &str)] = &[
    ("ro", "--read-only"),
    ("allow_other", "--allow-other"),
    ("nonempty", "--allow-non-empty"),
    ("allow_non_empty", "--allow-non-empty"),
    ("no_check", "--no-check"),
];

/// Options of `regfs mount` that take a value, as `name=value`.
const VALUED: &[(&str, &str)] = &[
    ("user", "--user"),
    ("ttl", "--ttl"),
    ("timeout", "--timeout"),
    ("cache_size", "--cache-size"),
    ("cache_dir", "--cache-dir"),
    ("cache_dir_size", "--cache-dir-size"),
    ("threads", "--threads"),
];

/// Why a mount-helper command line is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelperError {
    #[error("usage: regfs SOURCE MOUNTPOINT [-o OPTIONS]")]
    Usage,
    #[error("SOURCE must be a registry URL (http:// or https://), not {0:?}")]
    Source(String),
    #[error("unknown mount option {0:?}")]
    UnknownOption(String),
    #[error("mount option {0:?} needs a value ({0}=...)")]
    MissingValue(String),
}

/// Whether `args` (without the program name) are in the helper form: two operands first,
/// the first a URL, not a command of regfs (so a mistyped command still gets clap's answer).
pub fn is_helper_form(args: &[OsString], commands: &[&str]) -> bool {
    let operand = |a: &OsString| !a.to_string_lossy().starts_with('-');
    args.len() >= 2
        && operand(&args[0])
        && operand(&args[1])
        && args[0].to_string_lossy().contains("://")
        && !commands.iter().any(|c| args[0] == *c)
}

/// The arguments of `regfs mount ...` for a helper command line `SOURCE MOUNTPOINT [-o
/// OPTIONS] [-s] [-f] [-n] [-v]` (without the program name). The mount detaches
/// (`--daemon`): mount(8) waits for its helper to return.
pub fn to_mount_args(args: &[OsString]) -> Result<Vec<OsString>, HelperError> {
    let [source, mountpoint, rest @ ..] = args else {
        return Err(HelperError::Usage);
    };
    let source = source.to_string_lossy();
    if !(source.starts_with("http://") || source.starts_with("https://")) {
        return Err(HelperError::Source(source.into_owned()));
    }
    let mut out: Vec<OsString> = vec![
        "mount".into(),
        mountpoint.clone(),
        "--registry".into(),
        source.as_ref().into(),
        "--daemon".into(),
    ];
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        let arg = arg.to_string_lossy();
        match arg.as_ref() {
            "-o" => {
                let options = rest.next().ok_or(HelperError::Usage)?;
                options_to_flags(&options.to_string_lossy(), &mut out)?;
            }
            // Sloppy, fake, no mtab, verbose: mount(8)'s own flags, passed on to helpers.
            "-s" | "-f" | "-n" | "-v" => {}
            other => match other.strip_prefix("-o") {
                Some(options) if !options.is_empty() => options_to_flags(options, &mut out)?,
                _ => return Err(HelperError::UnknownOption(other.to_string())),
            },
        }
    }
    Ok(out)
}

/// Appends the flags for a comma-separated option list.
fn options_to_flags(options: &str, out: &mut Vec<OsString>) -> Result<(), HelperError> {
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (option, None),
        };
        // x-systemd.*, x-gvfs-show, comment=...: for other programs reading fstab.
        if name.starts_with("x-") || name == "comment" {
            continue;
        }
        if value.is_none() && IGNORED.contains(&name) {
            continue;
        }
        if let Some((_, flag)) = FLAGS.iter().find(|(n, _)| *n == name) {
            if value.is_some() {
                return Err(HelperError::UnknownOption(option.to_string()));
            }
            out.push((*flag).into());
            continue;
        }
        match (VALUED.iter().find(|(n, _)| *n == name), value) {
            (Some((_, flag)), Some(v)) if !v.is_empty() => {
                out.push((*flag).into());
                out.push(v.into());
            }
            (Some(_), _) => return Err(HelperError::MissingValue(name.to_string())),
            (None, _) => return Err(HelperError::UnknownOption(option.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn mount_args(args: &[&str]) -> Result<Vec<String>, HelperError> {
        to_mount_args(&os(args)).map(|v| {
            v.into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn options_map_to_mount_flags() {
        let args = mount_args(&[
            "http://r:5000",
            "/mnt/r",
            "-o",
            "ro,allow_other,cache_dir=/var/cache/regfs,user=alice,ttl=5,timeout=10,\
             cache_size=1000000000,cache_dir_size=5000000000,threads=8,nonempty,no_check",
        ])
        .unwrap();
        assert_eq!(
            args,
            [
                "mount",
                "/mnt/r",
                "--registry",
                "http://r:5000",
                "--daemon",
                "--read-only",
                "--allow-other",
                "--cache-dir",
                "/var/cache/regfs",
                "--user",
                "alice",
                "--ttl",
                "5",
                "--timeout",
                "10",
                "--cache-size",
                "1000000000",
                "--cache-dir-size",
                "5000000000",
                "--threads",
                "8",
                "--allow-non-empty",
                "--no-check",
            ]
        );
    }

    #[test]
    fn fstab_habits_are_ignored() {
        let args = mount_args(&[
            "https://r.example",
            "/mnt/r",
            "-o",
            "defaults,rw,_netdev,nofail,noauto,user,dev,nosuid,noexec,noatime,\
             x-systemd.automount,x-systemd.requires=network-online.target,comment=x",
            "-n",
            "-s",
        ])
        .unwrap();
        assert_eq!(
            args,
            [
                "mount",
                "/mnt/r",
                "--registry",
                "https://r.example",
                "--daemon"
            ]
        );
        let joined = mount_args(&["http://r", "/m", "-oro"]).unwrap();
        assert!(joined.contains(&"--read-only".to_string()));
    }

    #[test]
    fn unknown_options_and_bad_forms_are_refused_by_name() {
        assert_eq!(
            mount_args(&["http://r", "/m", "-o", "ro,compress"]),
            Err(HelperError::UnknownOption("compress".into()))
        );
        assert_eq!(
            mount_args(&["http://r", "/m", "-o", "ro=1"]),
            Err(HelperError::UnknownOption("ro=1".into()))
        );
        assert_eq!(
            mount_args(&["http://r", "/m", "-o", "cache_dir="]),
            Err(HelperError::MissingValue("cache_dir".into()))
        );
        assert_eq!(
            mount_args(&["http://r", "/m", "-o", "ttl"]),
            Err(HelperError::MissingValue("ttl".into()))
        );
        assert_eq!(
            mount_args(&["r:5000", "/m"]),
            Err(HelperError::Source("r:5000".into()))
        );
        assert_eq!(
            mount_args(&["http://r", "/m", "-o"]),
            Err(HelperError::Usage)
        );
        assert_eq!(mount_args(&["http://r"]), Err(HelperError::Usage));
        assert_eq!(
            mount_args(&["http://r", "/m", "--read-only"]),
            Err(HelperError::UnknownOption("--read-only".into()))
        );
        let err = HelperError::UnknownOption("compress".into()).to_string();
        assert!(err.contains("compress"), "{err}");
    }

    #[test]
    fn the_helper_form_is_told_from_commands() {
        let commands = ["serve", "mount", "completions", "man"];
        assert!(is_helper_form(
            &os(&["http://r", "/m", "-o", "ro"]),
            &commands
        ));
        assert!(!is_helper_form(&os(&["mount", "/m"]), &commands));
        assert!(!is_helper_form(&os(&["serve"]), &commands));
        assert!(!is_helper_form(&os(&["--help"]), &commands));
        assert!(!is_helper_form(&os(&["-v", "serve"]), &commands));
        assert!(!is_helper_form(&os(&["serv", "/m"]), &commands), "a typo");
    }
}
