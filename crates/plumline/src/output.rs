//! Writing calls to stdout as a table, JSON, NDJSON or CSV, page by page;
//! and log lines on stderr that keep clear of a progress bar.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::sync::Mutex;

use indicatif::ProgressBar;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use plumline_api::Call;

/// The progress bar on stderr, while one is drawn.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Makes `bar` the one log lines are printed above (`None`: no bar).
pub fn set_active_bar(bar: Option<ProgressBar>) {
    if let Ok(mut active) = ACTIVE_BAR.lock() {
        *active = bar;
    }
}

/// The tracing writer: stderr, with the progress bar (if any) hidden while
/// a line is written, so lines appear above the bar instead of through it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over one whole formatted event per call.
        let bar = ACTIVE_BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| io::stderr().lock().write_all(buf))?,
            _ => io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `--output` formats of `plumline calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people; times in --tz.
    Table,
    /// One JSON array of calls with the API's field names.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header row of the API's field names.
    Csv,
}

/// Streams calls in one format; call [`CallWriter::finish`] at the end.
pub struct CallWriter<W: Write> {
    format: OutputFormat,
    sink: Sink<W>,
    tz: TimeZone,
    n_written: u64,
}

enum Sink<W: Write> {
    Raw(W),
    Csv(Box<csv::Writer<W>>),
}

const TABLE_COLUMNS: [(&str, usize); 8] = [
    ("SESSION_ID", 24),
    ("START", 25),
    ("END", 25),
    ("DURATION", 8),
    ("TYPE", 8),
    ("SRC", 12),
    ("DEST", 12),
    ("LOG", 5),
];

impl<W: Write> CallWriter<W> {
    pub fn new(format: OutputFormat, out: W, tz: TimeZone) -> Self {
        let sink = match format {
            OutputFormat::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
            _ => Sink::Raw(out),
        };
        CallWriter { format, sink, tz, n_written: 0 }
    }

    /// Writes the header, if the format has one.
    pub fn start(&mut self) -> io::Result<()> {
        match self.format {
            OutputFormat::Table => {
                let header: Vec<String> = TABLE_COLUMNS.iter().map(|(name, _)| (*name).to_owned()).collect();
                self.table_row(&header)
            }
            OutputFormat::Json => self.raw_write(b"["),
            OutputFormat::Ndjson => Ok(()),
            OutputFormat::Csv => match &mut self.sink {
                Sink::Csv(w) => {
                    Ok(w.write_record(["dest", "src", "start", "end", "session_id", "type", "log"])?)
                }
                Sink::Raw(_) => Ok(()),
            },
        }
    }

    /// Writes a batch of calls.
    pub fn write_calls(&mut self, calls: &[Call]) -> io::Result<()> {
        for call in calls {
            match self.format {
                OutputFormat::Table => {
                    let row = [
                        call.session_id.clone(),
                        self.local_time(call.start),
                        self.local_time(call.end),
                        format!("{}s", call.duration_secs()),
                        call.call_type.to_string(),
                        call.src.clone(),
                        call.dest.clone(),
                        call.log.to_string(),
                    ];
                    self.table_row(&row)?;
                }
                OutputFormat::Json => {
                    let sep: &[u8] = if self.n_written > 0 { b",\n  " } else { b"\n  " };
                    self.raw_write(sep)?;
                    if let Sink::Raw(out) = &mut self.sink {
                        serde_json::to_writer(out, call)?;
                    }
                }
                OutputFormat::Ndjson => {
                    if let Sink::Raw(out) = &mut self.sink {
                        serde_json::to_writer(&mut *out, call)?;
                        out.write_all(b"\n")?;
                    }
                }
                OutputFormat::Csv => {
                    if let Sink::Csv(w) = &mut self.sink {
                        w.write_record([
                            call.dest.as_str(),
                            call.src.as_str(),
                            &call.start.to_string(),
                            &call.end.to_string(),
                            call.session_id.as_str(),
                            call.call_type.as_str(),
                            if call.log { "true" } else { "false" },
                        ])?;
                    }
                }
            }
            self.n_written += 1;
        }
        self.flush()
    }

    /// Closes the document (the JSON array) and flushes.
    pub fn finish(mut self) -> io::Result<u64> {
        if self.format == OutputFormat::Json {
            let close: &[u8] = if self.n_written > 0 { b"\n]\n" } else { b"]\n" };
            self.raw_write(close)?;
        }
        self.flush()?;
        Ok(self.n_written)
    }

    fn raw_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Raw(out) => out.write_all(bytes),
            Sink::Csv(_) => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Raw(out) => out.flush(),
            Sink::Csv(w) => w.flush(),
        }
    }

    fn table_row(&mut self, cells: &[String]) -> io::Result<()> {
        let mut line = String::with_capacity(140);
        for (i, (cell, (_, width))) in cells.iter().zip(TABLE_COLUMNS).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        line.push('\n');
        self.raw_write(line.as_bytes())
    }

    fn local_time(&self, secs: i64) -> String {
        match Timestamp::from_second(secs) {
            Ok(ts) => ts.to_zoned_datetime(self.tz.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            Err(_) => secs.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumline_api::CallType;

    fn calls() -> Vec<Call> {
        vec![
            Call {
                dest: "8009957586".into(),
                src: "2125551234".into(),
                start: 1_529_552_691,
                end: 1_529_552_697,
                session_id: "300060;001;1529552581".into(),
                call_type: CallType::Inbound,
                log: true,
            },
            Call {
                dest: "6175551234".into(),
                src: "Outbound".into(),
                start: 1_529_550_008,
                end: 1_529_550_036,
                session_id: "a,\"quoted\"".into(),
                call_type: CallType::Other("conference".into()),
                log: false,
            },
        ]
    }

    fn render(format: OutputFormat, batches: &[&[Call]]) -> String {
        let mut buf = Vec::new();
        let mut w = CallWriter::new(format, &mut buf, TimeZone::UTC);
        w.start().expect("header");
        for b in batches {
            w.write_calls(b).expect("write");
        }
        w.finish().expect("finish");
        String::from_utf8(buf).expect("utf8")
    }

    #[test]
    fn json_is_one_array_across_batches() {
        let c = calls();
        let text = render(OutputFormat::Json, &[&c[..1], &c[1..]]);
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&text).expect("valid json");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["start"], 1_529_552_691);
        assert_eq!(parsed[1]["type"], "conference");
        assert_eq!(parsed[1]["log"], false);
        assert_eq!(render(OutputFormat::Json, &[]).trim(), "[]");
    }

    #[test]
    fn ndjson_and_csv() {
        let c = calls();
        let nd = render(OutputFormat::Ndjson, &[&c]);
        assert_eq!(nd.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(nd.lines().next().expect("line")).expect("json");
        assert_eq!(first["session_id"], "300060;001;1529552581");

        let csv_text = render(OutputFormat::Csv, &[&c]);
        let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
        let header: Vec<String> = reader.headers().expect("header").iter().map(str::to_owned).collect();
        assert_eq!(header, ["dest", "src", "start", "end", "session_id", "type", "log"]);
        let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("rows");
        assert_eq!(&rows[1][4], "a,\"quoted\"");
        assert_eq!(&rows[1][6], "false");
    }

    #[test]
    fn table_is_aligned() {
        let text = render(OutputFormat::Table, &[&calls()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = lines[0].find("START").expect("START column");
        assert_eq!(lines[1].find("2018-06-21T03:44:51+00:00"), Some(col), "{text}");
    }
}
