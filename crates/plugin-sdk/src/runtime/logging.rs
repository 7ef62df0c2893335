//! Logs on stderr as hclog JSON lines, which the host parses and re-logs under the mount's
//! logger with their level (`plugin-protocol.md` §10). Nothing is ever written to stdout.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one hclog JSON object.
pub struct HclogJson;

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

#[derive(Default)]
struct JsonFields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().to_string(), value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_string(), text.into());
        }
    }
}

impl<S, N> FormatEvent<S, N> for HclogJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut visitor = JsonFields::default();
        event.record(&mut visitor);
        let mut line = serde_json::Map::new();
        line.insert("@level".into(), level_name(event.metadata().level()).into());
        line.insert("@message".into(), visitor.message.into());
        // hclog insists on exactly six fractional digits.
        line.insert(
            "@timestamp".into(),
            chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
                .into(),
        );
        line.insert("@module".into(), event.metadata().target().into());
        for (k, v) in visitor.fields {
            line.insert(k, v);
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

/// The log level: `BAO_LOG_LEVEL`, else `VAULT_LOG_LEVEL` (the server's own settings, which
/// the plugin inherits from the server environment), else `info`.
pub fn level_from_env(get: impl Fn(&str) -> Option<String>) -> String {
    let level = get("BAO_LOG_LEVEL")
        .filter(|v| !v.is_empty())
        .or_else(|| get("VAULT_LOG_LEVEL").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "info".to_string())
        .to_ascii_lowercase();
    match level.as_str() {
        "trace" | "debug" | "info" | "error" => level,
        "warn" | "warning" => "warn".to_string(),
        _ => "info".to_string(),
    }
}

/// Installs the stderr JSON logger for this crate and its dependencies.
pub fn init(level: &str) {
    // Our own crates log at the chosen level; dependencies only at warn and above.
    let ours = level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO);
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("vault_plugin_secrets_azure", ours)
        .with_target("vault_plugin_sdk", ours)
        .with_target("azure_clients", ours);
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .event_format(HclogJson),
        )
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_follows_the_server_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(level_from_env(env(&[])), "info");
        assert_eq!(
            level_from_env(env(&[("VAULT_LOG_LEVEL", "DEBUG")])),
            "debug"
        );
        assert_eq!(
            level_from_env(env(&[
                ("BAO_LOG_LEVEL", "trace"),
                ("VAULT_LOG_LEVEL", "error")
            ])),
            "trace"
        );
        assert_eq!(level_from_env(env(&[("BAO_LOG_LEVEL", "warning")])), "warn");
        assert_eq!(level_from_env(env(&[("BAO_LOG_LEVEL", "loud")])), "info");
    }

    #[test]
    fn lines_are_hclog_json() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(HclogJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(mount = "azure/", count = 3, "hello");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["@level"], "warn");
        assert_eq!(v["@message"], "hello");
        assert_eq!(v["mount"], "azure/");
        assert_eq!(v["count"], 3);
        let ts = v["@timestamp"].as_str().unwrap();
        let frac = ts.split('.').nth(1).unwrap();
        assert_eq!(frac.len(), 7, "six digits and Z: {ts}");
    }
}
