//! The Prometheus text the stand-in serves: a few plausible samples per
//! exporter kind (metric names as the real exporters use them) plus the
//! `alloy_standin_info` marker, and Alloy's own `/metrics`.

use crate::check::EXPORTER_PREFIX;

/// Body of `/api/v0/component/<component_id>/metrics`.
pub fn component_metrics(component_id: &str, hostname: &str) -> String {
    let kind = component_id
        .strip_prefix(EXPORTER_PREFIX)
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_default();
    let host = escape(hostname);
    let samples = match kind {
        "unix" => format!(
            "# HELP node_uname_info Labeled system information as provided by the uname system call.\n\
             # TYPE node_uname_info gauge\n\
             node_uname_info{{machine=\"x86_64\",nodename=\"{host}\",sysname=\"Linux\"}} 1\n\
             # HELP node_load1 1m load average.\n\
             # TYPE node_load1 gauge\n\
             node_load1 0.1\n"
        ),
        "windows" => format!(
            "# TYPE windows_cs_hostname gauge\n\
             windows_cs_hostname{{domain=\"\",fqdn=\"{host}\",hostname=\"{host}\"}} 1\n"
        ),
        "postgres" => "# TYPE pg_up gauge\npg_up 1\n".to_string(),
        "mysql" => "# TYPE mysql_up gauge\nmysql_up 1\n".to_string(),
        "redis" => "# TYPE redis_up gauge\nredis_up 1\n".to_string(),
        "process" => "# TYPE namedprocess_namegroup_num_procs gauge\n\
                      namedprocess_namegroup_num_procs{groupname=\"standin\"} 1\n"
            .to_string(),
        "cadvisor" => "# TYPE machine_cpu_cores gauge\nmachine_cpu_cores 2\n".to_string(),
        _ => String::new(),
    };
    format!(
        "{samples}# HELP alloy_standin_info Marks metrics served by the Alloy stand-in, not by Grafana Alloy.\n\
         # TYPE alloy_standin_info gauge\n\
         alloy_standin_info{{component_id=\"{}\"}} 1\n",
        escape(component_id)
    )
}

/// Body of Alloy's own `/metrics`.
pub fn alloy_metrics(version: &str, last_load_ok: bool, load_failures: u64) -> String {
    format!(
        "# TYPE alloy_build_info gauge\n\
         alloy_build_info{{branch=\"stand-in\",revision=\"muster-alloy-standin\",version=\"{}\"}} 1\n\
         # TYPE alloy_config_last_load_successful gauge\n\
         alloy_config_last_load_successful {}\n\
         # TYPE alloy_config_load_failures_total counter\n\
         alloy_config_load_failures_total {load_failures}\n",
        escape(version),
        u8::from(last_load_ok),
    )
}

/// Escapes a label value for the text exposition format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_exporter_serves_node_metrics_and_the_marker() {
        let body = component_metrics("prometheus.exporter.unix.default", "web-1");
        assert!(body.contains(
            "node_uname_info{machine=\"x86_64\",nodename=\"web-1\",sysname=\"Linux\"} 1\n"
        ));
        assert!(body.contains("node_load1 0.1\n"));
        assert!(body.ends_with(
            "alloy_standin_info{component_id=\"prometheus.exporter.unix.default\"} 1\n"
        ));
    }

    #[test]
    fn label_values_are_escaped() {
        let body = component_metrics("prometheus.exporter.unix.x", "a\"b\\c");
        assert!(body.contains("nodename=\"a\\\"b\\\\c\""), "{body}");
    }

    #[test]
    fn every_line_is_a_comment_or_a_sample() {
        for kind in [
            "unix", "windows", "postgres", "mysql", "redis", "process", "cadvisor",
        ] {
            let body = component_metrics(&format!("prometheus.exporter.{kind}.a"), "h");
            assert!(body.lines().count() >= 4, "{kind}: {body}");
            for line in body.lines() {
                let value = line.rsplit(' ').next().unwrap_or_default();
                assert!(
                    line.starts_with('#') || value.parse::<f64>().is_ok(),
                    "{kind}: {line}"
                );
            }
        }
    }
}
