//! Encoding pages and errors as the vendor does, straight into a `Vec<u8>`.
//!
//! Hand-written rather than serde: a page is the hot path of every
//! benchmark, and formatting from the compact records avoids building a
//! `Call` (and its four strings) per call.

use crate::dataset::{
    Day, KIND_INBOUND, KIND_OUTBOUND, KIND_TRANSFER, Rec, Resolved, Simulator, UNKNOWN_TYPE,
};
use crate::rng::mix64;

/// Rough bytes per call, to size buffers once.
pub(crate) const BYTES_PER_CALL: usize = 190;

/// One side of a call.
#[derive(Clone, Copy)]
enum Party {
    Number(u16),
    Peer(u64),
    Outbound,
}

fn parties(rec: Rec) -> (Party, Party, &'static str) {
    match rec.kind() {
        KIND_INBOUND => (Party::Number(rec.number), Party::Peer(rec.peer), "inbound"),
        KIND_OUTBOUND => (Party::Peer(rec.peer), Party::Outbound, "outbound"),
        KIND_TRANSFER => (Party::Peer(rec.peer), Party::Number(rec.number), "transfer"),
        _ => (Party::Number(rec.number), Party::Peer(rec.peer), UNKNOWN_TYPE),
    }
}

pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `v % 10` is a single digit.
        buf[i] = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

pub(crate) fn push_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_u64(out, v.unsigned_abs());
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let digits = if v == 0 { 1 } else { v.ilog10() as usize + 1 };
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(digits)));
    push_u64(out, v);
}

/// `s` escaped for the inside of a JSON string.
pub(crate) fn json_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let b = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[b >> 4]));
                out.push(char::from(HEX[b & 0xF]));
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` escaped for XML text.
pub(crate) fn xml_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn push_session_id(out: &mut Vec<u8>, sim: &Simulator, day: &Day, rec: Rec) {
    push_u64(out, u64::from(rec.part1));
    out.push(b';');
    push_padded(out, u64::from(rec.number) + 1, sim.part2_width());
    out.push(b';');
    push_i64(out, day.session_ts(rec));
}

/// A JSON page. With `quirks`, the encoding varies per call and per page
/// in the ways `plumline_api::wire` documents, decided by a hash so the same
/// page always reads the same.
pub(crate) fn json_page(sim: &Simulator, page: &Resolved, offset: u64, quirks: bool, out: &mut Vec<u8>) {
    out.reserve(64 + page.items.len() * BYTES_PER_CALL);
    let page_bits = mix64(offset ^ page.total.rotate_left(17));
    out.push(b'{');
    if quirks && page_bits & 0b1000 != 0 {
        out.extend_from_slice(b"\"status\":\"success\",");
    }
    // The vendor's table says `calls` is only "supplied when" there is data.
    let omit_calls = quirks && page.total == 0;
    let as_object = quirks && page_bits & 1 != 0;
    if !omit_calls {
        out.extend_from_slice(b"\"calls\":");
        out.push(if as_object { b'{' } else { b'[' });
        for (i, (day, rec)) in page.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if as_object {
                // PHP keeps the original array keys: the absolute index.
                out.push(b'"');
                push_u64(out, offset + i as u64);
                out.extend_from_slice(b"\":");
            }
            json_call(out, sim, day, rec, quirks);
        }
        out.push(if as_object { b'}' } else { b']' });
        out.push(b',');
    }
    out.extend_from_slice(b"\"total_calls\":");
    push_maybe_quoted(out, page.total, quirks && page_bits & 0b10 != 0);
    if quirks && page_bits & 0b100 != 0 {
        out.extend_from_slice(b",\"offset\":\"");
        push_u64(out, offset);
        out.push(b'"');
    }
    out.push(b'}');
}

fn push_maybe_quoted(out: &mut Vec<u8>, v: u64, quoted: bool) {
    if quoted {
        out.push(b'"');
        push_u64(out, v);
        out.push(b'"');
    } else {
        push_u64(out, v);
    }
}

fn push_maybe_quoted_i64(out: &mut Vec<u8>, v: i64, quoted: bool) {
    if quoted {
        out.push(b'"');
        push_i64(out, v);
        out.push(b'"');
    } else {
        push_i64(out, v);
    }
}

fn json_party(out: &mut Vec<u8>, sim: &Simulator, party: Party, bare_digits: bool) {
    match party {
        Party::Number(n) => {
            out.push(b'"');
            out.extend_from_slice(sim.json_number(n).as_bytes());
            out.push(b'"');
        }
        Party::Peer(p) => push_maybe_quoted(out, p, !bare_digits),
        Party::Outbound => out.extend_from_slice(b"\"Outbound\""),
    }
}

fn json_call(out: &mut Vec<u8>, sim: &Simulator, day: &Day, rec: Rec, quirks: bool) {
    let (dest, src, kind) = parties(rec);
    let bits = if quirks { mix64(rec.peer ^ u64::from(rec.part1)) } else { 0 };
    let start = day.start(rec);
    out.extend_from_slice(b"{\"dest\":");
    json_party(out, sim, dest, bits & 1 != 0);
    out.extend_from_slice(b",\"src\":");
    json_party(out, sim, src, bits & 1 != 0);
    out.extend_from_slice(b",\"start\":");
    push_maybe_quoted_i64(out, start, bits & 0b10 != 0);
    out.extend_from_slice(b",\"end\":");
    push_maybe_quoted_i64(out, start + i64::from(rec.dur), bits & 0b100 != 0);
    out.extend_from_slice(b",\"session_id\":\"");
    push_session_id(out, sim, day, rec);
    out.extend_from_slice(b"\",\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"log\":");
    let log = rec.log();
    out.extend_from_slice(match (bits >> 3) & 0b11 {
        _ if !quirks => {
            if log {
                &b"true"[..]
            } else {
                b"false"
            }
        }
        0 => {
            if log {
                b"1"
            } else {
                b"0"
            }
        }
        1 => {
            if log {
                b"\"true\""
            } else {
                b"\"false\""
            }
        }
        2 => {
            if log {
                b"\"1\""
            } else {
                b"\"0\""
            }
        }
        _ => {
            if log {
                b"true"
            } else {
                b"false"
            }
        }
    });
    if bits & 0b10_0000 != 0 {
        out.extend_from_slice(b",\"duration\":\"");
        push_u64(out, u64::from(rec.dur));
        out.push(b'"');
    }
    if bits & 0b100_0000 != 0 {
        out.extend_from_slice(b",\"billing\":{\"rate\":\"0.0200\",\"units\":[1,2]},\"recording\":null");
    }
    out.push(b'}');
}

/// An XML page in the vendor's shape. Quirks: `log` as `1`/`0`, extra
/// elements, and no `<calls>` at all when the total is 0.
pub(crate) fn xml_page(sim: &Simulator, page: &Resolved, quirks: bool, out: &mut Vec<u8>) {
    out.reserve(96 + page.items.len() * (BYTES_PER_CALL + 60));
    out.extend_from_slice(b"<?xml version=\"1.0\"?>\n<result>");
    if !(quirks && page.total == 0) {
        if page.items.is_empty() {
            out.extend_from_slice(b"<calls/>");
        } else {
            out.extend_from_slice(b"<calls>");
            for (day, rec) in page.iter() {
                xml_call(out, sim, day, rec, quirks);
            }
            out.extend_from_slice(b"</calls>");
        }
    }
    out.extend_from_slice(b"<total_calls>");
    push_u64(out, page.total);
    out.extend_from_slice(b"</total_calls></result>\n");
}

fn xml_party(out: &mut Vec<u8>, sim: &Simulator, party: Party) {
    match party {
        Party::Number(n) => out.extend_from_slice(sim.xml_number(n).as_bytes()),
        Party::Peer(p) => push_u64(out, p),
        Party::Outbound => out.extend_from_slice(b"Outbound"),
    }
}

fn xml_call(out: &mut Vec<u8>, sim: &Simulator, day: &Day, rec: Rec, quirks: bool) {
    let (dest, src, kind) = parties(rec);
    let bits = if quirks { mix64(rec.peer ^ u64::from(rec.part1)) } else { 0 };
    let start = day.start(rec);
    out.extend_from_slice(b"<item><dest>");
    xml_party(out, sim, dest);
    out.extend_from_slice(b"</dest><src>");
    xml_party(out, sim, src);
    out.extend_from_slice(b"</src><start>");
    push_i64(out, start);
    out.extend_from_slice(b"</start><end>");
    push_i64(out, start + i64::from(rec.dur));
    out.extend_from_slice(b"</end><session_id>");
    push_session_id(out, sim, day, rec);
    out.extend_from_slice(b"</session_id><type>");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"</type><log>");
    out.extend_from_slice(match (quirks && bits & 0b1000 != 0, rec.log()) {
        (true, true) => b"1",
        (true, false) => b"0",
        (false, true) => &b"true"[..],
        (false, false) => b"false",
    });
    out.extend_from_slice(b"</log>");
    if bits & 0b10_0000 != 0 {
        out.extend_from_slice(b"<duration>");
        push_u64(out, u64::from(rec.dur));
        out.extend_from_slice(b"</duration>");
    }
    out.extend_from_slice(b"</item>");
}

/// `{"error":"…"}`.
pub(crate) fn json_error(message: &str) -> Vec<u8> {
    format!("{{\"error\":\"{}\"}}", json_escaped(message)).into_bytes()
}

/// `{"error":"…","calls":[],"total_calls":0}`: an error inside a 200.
pub(crate) fn json_error_page(message: &str) -> Vec<u8> {
    format!("{{\"error\":\"{}\",\"calls\":[],\"total_calls\":0}}", json_escaped(message)).into_bytes()
}

/// `<result><error>…</error><calls/><total_calls>0</total_calls></result>`: an error inside a 200.
pub(crate) fn xml_error_page(message: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\"?>\n<result><error>{}</error><calls/><total_calls>0</total_calls></result>\n",
        xml_escaped(message)
    )
    .into_bytes()
}

/// `<result><error>…</error></result>`.
pub(crate) fn xml_error(message: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?>\n<result><error>{}</error></result>\n", xml_escaped(message))
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_like_std() {
        for v in [0u64, 7, 10, 99, 100, 1_529_552_581, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        for v in [0i64, -1, -86_400, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            push_i64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
        let cases = [(1, 3, "001"), (12, 3, "012"), (1234, 3, "1234"), (0, 3, "000")];
        for (v, width, want) in cases {
            let mut out = Vec::new();
            push_padded(&mut out, v, width);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(json_escaped("a\"b\\c\n"), "a\\\"b\\\\c\\u000a");
        assert_eq!(xml_escaped("<a & 'b'>"), "&lt;a &amp; &apos;b&apos;&gt;");
        assert_eq!(json_error("bad \"x\""), br#"{"error":"bad \"x\""}"#);
        assert!(String::from_utf8_lossy(&xml_error("a<b")).contains("<error>a&lt;b</error>"));
    }
}
