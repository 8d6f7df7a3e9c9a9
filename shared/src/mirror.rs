//! Where hosts install Grafana Alloy from when not from Grafana's own
//! repositories: the server's `[alloy_mirror]` setting, handed to hosts
//! through `/install.sh`, and the agent config's `[alloy_mirror]` that
//! `install-alloy` reads. One type, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// A mirror of Grafana's package repositories for air-gapped sites. Unset
/// fields keep Grafana's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlloyMirror {
    /// apt repository base URL (`deb URL stable main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apt: Option<String>,
    /// dnf/yum/zypper repository base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<String>,
    /// URL (https://, http:// or file://) of the key that signs the mirror's
    /// packages and metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// URL of Alloy's Windows installer (`alloy-installer-windows-amd64.exe`,
    /// unzipped), which Windows agents run silently when Alloy is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<String>,
}
