//! `runner install`: service files that keep the daemon running across crashes,
//! memory restarts (exit 75) and reboots.
//!
//! Both supervisors restart on failure only: a clean stop (exit 0 after SIGTERM) stays
//! stopped, and a bad configuration (exit 2) is not retried in a tight loop by systemd
//! (launchd throttles respawns to one per 10 s by itself).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The launchd label and systemd unit name.
pub const LABEL: &str = "dev.steadfast.runner";
/// The systemd unit file name.
pub const UNIT: &str = "steadfast-runner.service";

/// What to install.
#[derive(Debug, Clone)]
pub struct Service {
    /// The `runner` binary (absolute).
    pub exe: PathBuf,
    /// The configuration (absolute).
    pub config: PathBuf,
    /// The state directory (absolute), for launchd's stderr file.
    pub state_dir: PathBuf,
    /// How long SIGTERM is given before a hard kill.
    pub shutdown_grace: Duration,
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// systemd quoting for ExecStart arguments.
fn sd_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:=@".contains(c))
    {
        s.to_string()
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('%', "%%")
        )
    }
}

impl Service {
    fn workdir(&self) -> PathBuf {
        self.config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"))
    }

    /// Where the LaunchAgent goes: `~/Library/LaunchAgents/<label>.plist`.
    pub fn launchd_path(home: &Path) -> PathBuf {
        home.join("Library/LaunchAgents")
            .join(format!("{LABEL}.plist"))
    }

    /// Where the user unit goes: `~/.config/systemd/user/<unit>`.
    pub fn systemd_path(home: &Path) -> PathBuf {
        home.join(".config/systemd/user").join(UNIT)
    }

    /// A LaunchAgent: starts at login, restarted whenever it exits unsuccessfully.
    pub fn launchd_plist(&self) -> String {
        let args = [
            self.exe.display().to_string(),
            "run".into(),
            "--config".into(),
            self.config.display().to_string(),
        ]
        .iter()
        .map(|a| format!("        <string>{}</string>\n", xml(a)))
        .collect::<String>();
        let exit_timeout = self.shutdown_grace.as_secs() + 10;
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
    <key>Label</key>
    <string>{LABEL}</string>
    <key>ProgramArguments</key>
    <array>
{args}    </array>
    <key>WorkingDirectory</key>
    <string>{workdir}</string>
    <key>RunAtLoad</key>
    <true/>
    <!-- Restart after a crash or a memory restart (exit 75); a clean stop stays stopped. -->
    <key>KeepAlive</key>
    <dict>
        <key>SuccessfulExit</key>
        <false/>
    </dict>
    <key>ThrottleInterval</key>
    <integer>10</integer>
    <!-- SIGTERM first; running steps get the shutdown grace. -->
    <key>ExitTimeOut</key>
    <integer>{exit_timeout}</integer>
    <key>ProcessType</key>
    <string>Background</string>
    <!-- JSON logs already go to the rotating runner.log in the state dir; stdout is
         dropped so launchd does not grow an unbounded copy. Panics land in stderr. -->
    <key>StandardOutPath</key>
    <string>/dev/null</string>
    <key>StandardErrorPath</key>
    <string>{stderr}</string>
</dict>
</plist>
"#,
            workdir = xml(&self.workdir().display().to_string()),
            stderr = xml(&self
                .state_dir
                .join("launchd.stderr.log")
                .display()
                .to_string()),
        )
    }

    /// A systemd user unit with `Restart=on-failure`.
    pub fn systemd_unit(&self) -> String {
        format!(
            "[Unit]
Description=Steadfast job runner
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={exe} run --config {config}
WorkingDirectory={workdir}
# Restart after a crash or a memory restart (exit 75); a clean stop stays stopped and a
# bad configuration (exit 2) or an unusable state database (exit 4) is not retried in a loop.
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=2 4
KillSignal=SIGTERM
TimeoutStopSec={stop}
# JSON logs go to the journal and to the rotating runner.log in the state dir.
StandardOutput=journal

[Install]
WantedBy=default.target
",
            exe = sd_quote(&self.exe.display().to_string()),
            config = sd_quote(&self.config.display().to_string()),
            workdir = sd_quote(&self.workdir().display().to_string()),
            stop = self.shutdown_grace.as_secs() + 10,
        )
    }

    /// How to load the LaunchAgent once written to `path`.
    pub fn launchd_instructions(path: &Path) -> String {
        format!(
            "load it now and at every login:\n  launchctl bootstrap gui/$(id -u) {p}\n\
             check it:\n  launchctl print gui/$(id -u)/{LABEL} | head -20\n\
             stop and unload:\n  launchctl bootout gui/$(id -u) {p}\n\
             after editing the config: launchctl kickstart -k gui/$(id -u)/{LABEL}",
            p = path.display()
        )
    }

    /// How to enable the unit once written.
    pub fn systemd_instructions() -> String {
        format!(
            "enable and start it:\n  systemctl --user daemon-reload\n  systemctl --user enable --now {UNIT}\n\
             keep it running while logged out:\n  loginctl enable-linger \"$USER\"\n\
             logs:\n  journalctl --user -u {UNIT} -f"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        Service {
            exe: "/opt/steadfast/bin/runner".into(),
            config: "/Users/me/steadfast/runner & co.toml".into(),
            state_dir: "/Users/me/steadfast/state".into(),
            shutdown_grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_plist_restarts_on_failure_with_absolute_paths() {
        let p = service().launchd_plist();
        assert!(p.contains("<string>/opt/steadfast/bin/runner</string>"));
        assert!(p.contains("<string>/Users/me/steadfast/runner &amp; co.toml</string>"));
        assert!(p.contains("<key>SuccessfulExit</key>\n        <false/>"));
        assert!(p.contains("<integer>40</integer>"));
        assert!(p.contains("<string>/Users/me/steadfast</string>"));
    }

    #[test]
    fn the_unit_restarts_on_failure_and_quotes_paths() {
        let u = service().systemd_unit();
        assert!(u.contains("Restart=on-failure"));
        assert!(u.contains(
            "ExecStart=/opt/steadfast/bin/runner run --config \"/Users/me/steadfast/runner & co.toml\""
        ));
        assert!(u.contains("RestartPreventExitStatus=2 4"));
        assert!(u.contains("TimeoutStopSec=40"));
    }
}
