//! cloudflared's log format on the `log` facade: `<RFC3339 UTC> <LVL> <message> key=value ...`
//! on stderr (keys sorted), JSON lines `{"level","time","message",...}` for `--logfile` and
//! `--output json`.
//!
//! Call sites use `log::info!(connIndex = 0; "Registered tunnel connection")`. Secrets must
//! never be passed as values; [`crate::config::Secret`] prints a mask if one slips through.

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where and how lines are written.
pub struct Logger {
    level: LevelFilter,
    json_console: bool,
    file: Option<Mutex<File>>,
}

/// Parses cloudflared's level names (`debug`, `info`, `warn`, `error`, `fatal`).
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::Trace,
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warn" | "warning" => LevelFilter::Warn,
        "error" | "fatal" | "panic" => LevelFilter::Error,
        "off" | "disabled" => LevelFilter::Off,
        _ => return None,
    })
}

/// Installs the process logger; a second call is a no-op (tests may call it repeatedly).
pub fn init(level: LevelFilter, json_console: bool, file: Option<File>) {
    let logger = Logger {
        level,
        json_console,
        file: file.map(Mutex::new),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let time = rfc3339_utc(SystemTime::now());
        let mut fields = Fields::default();
        let _ = record.key_values().visit(&mut fields);
        fields.0.sort_by(|a, b| a.0.cmp(&b.0));
        let message = record.args().to_string();
        if self.json_console {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}",
                json_line(record.level(), &time, &message, &fields.0, &fields.1)
            );
        } else {
            let _ = writeln!(
                std::io::stderr().lock(),
                "{}",
                console_line(record.level(), &time, &message, &fields.0)
            );
        }
        if let Some(file) = &self.file
            && let Ok(mut f) = file.lock()
        {
            let _ = writeln!(
                f,
                "{}",
                json_line(record.level(), &time, &message, &fields.0, &fields.1)
            );
        }
    }

    fn flush(&self) {
        if let Some(file) = &self.file
            && let Ok(mut f) = file.lock()
        {
            let _ = f.flush();
        }
    }
}

/// A record's key-values as text (console) and with their type kept (JSON: zerolog writes
/// `connIndex` and `event` as numbers, so a number logged as a number stays one).
#[derive(Default)]
struct Fields(Vec<(String, String)>, Vec<serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        self.1.push(typed(&value));
        Ok(())
    }
}

fn typed(value: &Value<'_>) -> serde_json::Value {
    if let Some(b) = value.to_bool() {
        b.into()
    } else if let Some(n) = value.to_u64() {
        n.into()
    } else if let Some(n) = value.to_i64() {
        n.into()
    } else if let Some(f) = value.to_f64().and_then(serde_json::Number::from_f64) {
        f.into()
    } else {
        value.to_string().into()
    }
}

fn short_level(level: Level) -> &'static str {
    match level {
        Level::Error => "ERR",
        Level::Warn => "WRN",
        Level::Info => "INF",
        Level::Debug => "DBG",
        Level::Trace => "TRC",
    }
}

fn console_line(level: Level, time: &str, message: &str, fields: &[(String, String)]) -> String {
    let mut line = format!("{time} {} {message}", short_level(level));
    for (k, v) in fields {
        if v.contains(' ') || v.is_empty() {
            line.push_str(&format!(" {k}={v:?}"));
        } else {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

fn json_line(
    level: Level,
    time: &str,
    message: &str,
    fields: &[(String, String)],
    typed: &[serde_json::Value],
) -> String {
    let mut obj = serde_json::Map::new();
    let name = match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    obj.insert("level".into(), name.into());
    obj.insert("time".into(), time.into());
    obj.insert("message".into(), message.into());
    for (i, (k, v)) in fields.iter().enumerate() {
        let value = typed.get(i).cloned().unwrap_or_else(|| v.clone().into());
        obj.insert(k.clone(), value);
    }
    serde_json::Value::Object(obj).to_string()
}

/// `2006-01-02T15:04:05Z` in UTC, without a date library.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_zerolog_console() {
        let fields = vec![
            ("connIndex".to_owned(), "0".to_owned()),
            ("ip".to_owned(), "127.0.0.1".to_owned()),
        ];
        assert_eq!(
            console_line(
                Level::Info,
                "2025-05-01T00:00:00Z",
                "Registered tunnel connection",
                &fields
            ),
            "2025-05-01T00:00:00Z INF Registered tunnel connection connIndex=0 ip=127.0.0.1"
        );
        let typed = vec![0u64.into(), "127.0.0.1".into()];
        let json = json_line(Level::Warn, "t", "m", &fields, &typed);
        assert_eq!(
            json,
            r#"{"connIndex":0,"ip":"127.0.0.1","level":"warn","message":"m","time":"t"}"#
        );
    }

    #[test]
    fn numbers_stay_numbers_and_strings_stay_strings() {
        assert_eq!(typed(&Value::from(3u8)), serde_json::json!(3));
        assert_eq!(typed(&Value::from(-2i64)), serde_json::json!(-2));
        assert_eq!(typed(&Value::from("0")), serde_json::json!("0"));
        assert_eq!(typed(&Value::from(true)), serde_json::json!(true));
    }

    #[test]
    fn rfc3339() {
        let t = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        assert_eq!(rfc3339_utc(t), "2025-11-24T16:00:00Z");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
