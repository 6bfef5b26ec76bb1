//! The lake's Arrow schema and the conversion of calls into
//! [`RecordBatch`]es.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock};

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use plumline_api::Call;

/// The lake's columns, in order, as the contract states them.
///
/// `number` is the only nullable column: it holds the number the export was
/// filtered by, or null for an unfiltered export.
///
/// `start` and `end` are whole seconds stored as `Timestamp(Millisecond, "UTC")`:
/// Parquet has no seconds unit, and arrow-rs writes a seconds timestamp as a
/// bare INT64 that pyarrow and `DuckDB` read as a plain integer, while
/// milliseconds become `TIMESTAMP(MILLIS, UTC)` that every reader knows.
#[must_use]
pub fn lake_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        Arc::new(Schema::new(vec![
            Field::new("session_id", DataType::Utf8, false),
            Field::new("number", DataType::Utf8, true),
            Field::new("src", DataType::Utf8, false),
            Field::new("dest", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("start", ts.clone(), false),
            Field::new("end", ts, false),
            Field::new("duration_s", DataType::Int64, false),
            Field::new("log", DataType::Boolean, false),
        ]))
    });
    Arc::clone(&SCHEMA)
}

/// Builds one batch of the lake's schema from `calls`, with `number` in
/// every row's `number` column.
///
/// # Errors
/// Only if the arrays disagree with the schema, which would be a bug.
pub fn calls_to_batch(calls: &[Call], number: Option<&str>) -> Result<RecordBatch, ArrowError> {
    let n = calls.len();
    let bytes = |f: fn(&Call) -> &str| calls.iter().map(|c| f(c).len()).sum::<usize>();
    let strings = |f: fn(&Call) -> &str, capacity: usize| {
        let mut b = StringBuilder::with_capacity(n, capacity);
        for c in calls {
            b.append_value(f(c));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let number: ArrayRef = match number {
        Some(num) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(num, n))),
        None => Arc::new(StringArray::new_null(n)),
    };
    let columns: Vec<ArrayRef> = vec![
        strings(|c| &c.session_id, bytes(|c| &c.session_id)),
        number,
        strings(|c| &c.src, bytes(|c| &c.src)),
        strings(|c| &c.dest, bytes(|c| &c.dest)),
        strings(|c| c.call_type.as_str(), bytes(|c| c.call_type.as_str())),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(calls.iter().map(|c| millis(c.start)))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(calls.iter().map(|c| millis(c.end)))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(calls.iter().map(Call::duration_secs))),
        Arc::new(calls.iter().map(|c| Some(c.log)).collect::<BooleanArray>()),
    ];
    RecordBatch::try_new(lake_schema(), columns)
}

/// UNIX seconds as milliseconds; saturates far outside any real call time.
fn millis(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

/// A 128-bit fingerprint of session ids, for dedupe without keeping the
/// strings: two independently keyed `SipHash`es, so an accidental collision
/// among a day's calls is out of reach (about 2^-64 for a billion calls).
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionHasher {
    a: RandomState,
    b: RandomState,
}

impl SessionHasher {
    pub(crate) fn fingerprint(&self, session_id: &str) -> u128 {
        (u128::from(self.a.hash_one(session_id)) << 64) | u128::from(self.b.hash_one(session_id))
    }

    /// A fingerprint of everything the API says about a call: two reads of
    /// a day list the same calls exactly when the wrapping sums of these
    /// over their distinct calls agree (up to a 2^-128 chance).
    pub(crate) fn content(&self, call: &Call) -> u128 {
        (u128::from(self.a.hash_one(call)) << 64) | u128::from(self.b.hash_one(call))
    }
}

/// Keeps the rows of `batch` where `keep` is true, with Arrow's filter
/// kernel (any schema; the lake's in practice).
pub(crate) fn filter_rows(batch: &RecordBatch, keep: &[bool]) -> Result<RecordBatch, ArrowError> {
    arrow_select::filter::filter_record_batch(batch, &BooleanArray::from(keep.to_vec()))
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMillisecondType;
    use plumline_api::CallType;

    use super::*;

    fn call(id: &str, start: i64, call_type: CallType) -> Call {
        Call {
            dest: "8005550000".into(),
            src: "Outbound".into(),
            start,
            end: start + 42,
            session_id: id.into(),
            call_type,
            log: start % 2 == 0,
        }
    }

    #[test]
    fn batch_has_the_contract_schema_and_values() {
        let calls =
            vec![call("a;1", 100, CallType::Inbound), call("b;2", 201, CallType::Other("Sip-Refer".into()))];
        for number in [Some("6175551234"), None] {
            let batch = calls_to_batch(&calls, number).expect("batch");
            assert_eq!(batch.schema(), lake_schema());
            assert_eq!(batch.num_rows(), 2);
            let col = |name: &str| batch.column_by_name(name).expect(name).clone();
            assert_eq!(col("session_id").as_string::<i32>().value(1), "b;2");
            assert_eq!(col("type").as_string::<i32>().value(1), "Sip-Refer");
            assert_eq!(col("start").as_primitive::<TimestampMillisecondType>().value(0), 100_000);
            assert_eq!(col("end").as_primitive::<TimestampMillisecondType>().value(1), 243_000);
            assert_eq!(col("duration_s").as_primitive::<arrow_array::types::Int64Type>().value(0), 42);
            assert!(col("log").as_boolean().value(0));
            assert_eq!(col("number").is_null(0), number.is_none());
        }
        assert_eq!(calls_to_batch(&[], None).expect("empty").num_rows(), 0);
    }

    #[test]
    fn filtering_keeps_selected_rows_and_schema() {
        let calls: Vec<Call> = (0..5).map(|i| call(&format!("s{i}"), i, CallType::Transfer)).collect();
        let batch = calls_to_batch(&calls, Some("1")).expect("batch");
        let kept = filter_rows(&batch, &[true, false, true, false, true]).expect("filter");
        assert_eq!(kept.schema(), lake_schema());
        let expect =
            calls_to_batch(&[calls[0].clone(), calls[2].clone(), calls[4].clone()], Some("1")).expect("b");
        assert_eq!(kept, expect);
    }

    #[test]
    fn fingerprints_are_stable_within_a_hasher() {
        let h = SessionHasher::default();
        assert_eq!(h.fingerprint("300060;001;1529552581"), h.fingerprint("300060;001;1529552581"));
        assert_ne!(h.fingerprint("a"), h.fingerprint("b"));
    }
}
