//! SDP descriptions and ICE candidates, checked with Mozilla's `webrtc-sdp` parser.
//!
//! Bodies arrive in two steps: serde checks their shape (400), then `validate`
//! checks their content (422) once the room's state allows the call.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use webrtc_sdp::attribute_type::SdpAttribute;

use crate::error::Error;

/// Which half of the offer/answer exchange a description is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    Offer,
    Answer,
}

/// An `RTCSessionDescriptionInit`: `{"type": "offer"|"answer", "sdp": "v=0..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionDescription {
    /// `offer` or `answer`; must match the call it is sent with.
    #[serde(rename = "type")]
    #[schema(example = "offer")]
    pub kind: String,
    #[schema(example = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n...")]
    pub sdp: String,
}

impl SessionDescription {
    /// Checks that this is a parseable SDP of the expected kind.
    pub fn validate(&self, expected: SdpKind) -> Result<(), Error> {
        let want = match expected {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
        };
        if self.kind != want {
            return Err(Error::InvalidSdp(format!(
                "expected a description of type \"{want}\", got \"{}\"",
                self.kind
            )));
        }
        let session = webrtc_sdp::parse_sdp(&self.sdp, false)
            .map_err(|e| Error::InvalidSdp(format!("the {want} SDP does not parse: {e}")))?;
        // One line per description, not one per skipped line: an offer can
        // carry thousands. `?` escapes what the client put in the line.
        if let Some(first) = session.warnings.first() {
            tracing::debug!(count = session.warnings.len(), first = ?first, "the {want} SDP has lines the parser skipped");
        }
        if session.media.is_empty() {
            return Err(Error::InvalidSdp(format!("the {want} SDP has no media section")));
        }
        Ok(())
    }
}

/// Longest `candidate` line accepted, in bytes: real ones are under 200.
pub const MAX_CANDIDATE_BYTES: usize = 1024;
/// Longest `sdpMid` accepted, in bytes (browsers send "0", "1", ...).
pub const MAX_SDP_MID_BYTES: usize = 32;
/// Longest `usernameFragment` accepted, in bytes (RFC 8839 allows 256 characters of ASCII).
pub const MAX_UFRAG_BYTES: usize = 256;

/// An `RTCIceCandidateInit`. An empty `candidate` means end of candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IceCandidate {
    /// At most 1024 bytes (longer is 422 `invalid_candidate`).
    #[schema(example = "candidate:1 1 udp 2113937151 192.0.2.1 54400 typ host", max_length = 1024)]
    pub candidate: String,
    /// At most 32 bytes (longer is 422 `invalid_candidate`).
    #[serde(rename = "sdpMid", default)]
    #[schema(example = "0", max_length = 32)]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", default)]
    #[schema(example = 0, minimum = 0, maximum = 65535)]
    pub sdp_m_line_index: Option<u16>,
    /// At most 256 bytes (longer is 422 `invalid_candidate`).
    #[serde(rename = "usernameFragment", default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub username_fragment: Option<String>,
}

impl IceCandidate {
    pub fn is_end_of_candidates(&self) -> bool {
        self.candidate.is_empty()
    }

    pub fn validate(&self) -> Result<(), Error> {
        // Bounds first, end of candidates included: every field is relayed as is.
        let too_long = |field: &str, value: Option<&str>, max: usize| match value {
            Some(v) if v.len() > max => Err(Error::InvalidCandidate(format!("{field} is at most {max} bytes"))),
            _ => Ok(()),
        };
        too_long("candidate", Some(&self.candidate), MAX_CANDIDATE_BYTES)?;
        too_long("sdpMid", self.sdp_mid.as_deref(), MAX_SDP_MID_BYTES)?;
        too_long("usernameFragment", self.username_fragment.as_deref(), MAX_UFRAG_BYTES)?;
        if self.is_end_of_candidates() {
            return Ok(());
        }
        if self.sdp_mid.is_none() && self.sdp_m_line_index.is_none() {
            return Err(Error::InvalidCandidate(
                "a candidate needs sdpMid or sdpMLineIndex".into(),
            ));
        }
        let line = self.candidate.strip_prefix("a=").unwrap_or(&self.candidate);
        if !line.starts_with("candidate:") {
            return Err(Error::InvalidCandidate("a candidate starts with \"candidate:\"".into()));
        }
        match line.parse::<SdpAttribute>() {
            Ok(SdpAttribute::Candidate(_)) => Ok(()),
            Ok(_) => Err(Error::InvalidCandidate("not a candidate attribute".into())),
            Err(e) => Err(Error::InvalidCandidate(format!("the candidate does not parse: {e}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\n";

    fn desc(kind: &str, sdp: &str) -> SessionDescription {
        SessionDescription { kind: kind.into(), sdp: sdp.into() }
    }

    #[test]
    fn sdp_must_parse_and_match_the_call() {
        assert!(desc("offer", OFFER).validate(SdpKind::Offer).is_ok());
        assert!(matches!(desc("answer", OFFER).validate(SdpKind::Offer), Err(Error::InvalidSdp(_))));
        assert!(matches!(desc("offer", "hello").validate(SdpKind::Offer), Err(Error::InvalidSdp(_))));
    }

    #[test]
    fn skipped_lines_are_logged_once_and_escaped() {
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
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let mut sdp = OFFER.to_owned();
        sdp.push_str("a=x-evil:\u{1b}[31mred\r\n");
        for i in 0..7000 {
            sdp.push_str(&format!("a=x-unknown-{i}:1\r\n"));
        }
        tracing::subscriber::with_default(subscriber, || desc("offer", &sdp).validate(SdpKind::Offer)).unwrap();
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("count=7001") && out.contains("\\u{1b}[31mred"), "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
    }

    fn cand(c: &str, mid: Option<&str>) -> IceCandidate {
        IceCandidate {
            candidate: c.into(),
            sdp_mid: mid.map(Into::into),
            sdp_m_line_index: None,
            username_fragment: None,
        }
    }

    #[test]
    fn candidates() {
        let good = "candidate:842163049 1 udp 1677729535 192.0.2.7 46154 typ srflx raddr 10.0.0.1 rport 46154 generation 0 ufrag abcd network-cost 999";
        assert!(cand(good, Some("0")).validate().is_ok());
        assert!(cand(&format!("a={good}"), Some("0")).validate().is_ok());
        assert!(cand("", None).validate().is_ok());
        assert!(cand(good, None).validate().is_err());
        assert!(cand("candidate:garbage", Some("0")).validate().is_err());
        assert!(cand("ice-ufrag:abcd", Some("0")).validate().is_err());
    }

    #[test]
    fn candidate_fields_are_bounded() {
        let line = |n: usize| {
            let base = "candidate:1 1 udp 2113937151 192.0.2.1 54400 typ host generation 0 ufrag ";
            format!("{base}{}", "a".repeat(n - base.len()))
        };
        assert!(cand(&line(MAX_CANDIDATE_BYTES), Some("0")).validate().is_ok());
        assert!(matches!(cand(&line(MAX_CANDIDATE_BYTES + 1), Some("0")).validate(), Err(Error::InvalidCandidate(_))));
        let mid = "m".repeat(MAX_SDP_MID_BYTES);
        assert!(cand(&line(100), Some(&mid)).validate().is_ok());
        assert!(matches!(cand(&line(100), Some(&format!("{mid}m"))).validate(), Err(Error::InvalidCandidate(_))));
        // End of candidates is bounded too.
        assert!(matches!(cand("", Some(&format!("{mid}m"))).validate(), Err(Error::InvalidCandidate(_))));
        let mut c = cand(&line(100), Some("0"));
        c.username_fragment = Some("u".repeat(MAX_UFRAG_BYTES));
        assert!(c.validate().is_ok());
        c.username_fragment = Some("u".repeat(MAX_UFRAG_BYTES + 1));
        assert!(matches!(c.validate(), Err(Error::InvalidCandidate(_))));
    }

    mod props {
        use super::*;
        use crate::error::ErrorCode;
        use proptest::prelude::*;
        use proptest::sample::Index;

        /// One edit of an SDP's lines.
        #[derive(Debug, Clone)]
        enum Edit {
            Drop(Index),
            Repeat(Index),
            Swap(Index, Index),
            Replace(Index, String),
            Insert(Index, String),
            Splice(Index, Index, String),
        }

        /// Lines that look like SDP, and some that do not.
        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                "[vosticbmkra]=[ -~]{0,60}",
                "a=(rtpmap|fmtp|mid|ssrc|candidate|extmap|fingerprint|setup|group|rtcp-fb|msid|simulcast|rid):[ -~]{0,60}",
                "m=(video|audio|application) [0-9]{1,6} [A-Z/]{0,20} [0-9 ]{0,20}",
                any::<String>(),
            ]
        }

        fn edit() -> impl Strategy<Value = Edit> {
            prop_oneof![
                any::<Index>().prop_map(Edit::Drop),
                any::<Index>().prop_map(Edit::Repeat),
                (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::Swap(a, b)),
                (any::<Index>(), line()).prop_map(|(i, l)| Edit::Replace(i, l)),
                (any::<Index>(), line()).prop_map(|(i, l)| Edit::Insert(i, l)),
                (any::<Index>(), any::<Index>(), ".{0,8}").prop_map(|(i, at, t)| Edit::Splice(i, at, t)),
            ]
        }

        fn mutate(edits: &[Edit], crlf: bool) -> String {
            let mut lines: Vec<String> = OFFER.lines().map(str::to_owned).collect();
            for e in edits {
                if lines.is_empty() {
                    lines.push(String::new());
                }
                let n = lines.len();
                match e {
                    Edit::Drop(i) => drop(lines.remove(i.index(n))),
                    Edit::Repeat(i) => lines.insert(i.index(n), lines[i.index(n)].clone()),
                    Edit::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
                    Edit::Replace(i, l) => lines[i.index(n)] = l.clone(),
                    Edit::Insert(i, l) => lines.insert(i.index(n + 1), l.clone()),
                    Edit::Splice(i, at, t) => {
                        let l = &mut lines[i.index(n)];
                        let bounds: Vec<usize> = (0..=l.len()).filter(|b| l.is_char_boundary(*b)).collect();
                        l.insert_str(bounds[at.index(bounds.len())], t);
                    }
                }
            }
            lines.join(if crlf { "\r\n" } else { "\n" })
        }

        #[track_caller]
        fn sdp_outcome(r: Result<(), Error>) {
            if let Err(e) = r {
                assert_eq!(e.code(), ErrorCode::InvalidSdp, "{e}");
            }
        }

        fn candidate_line() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                "[0-9]{1,11}",
                "udp|tcp|UDP|TCP",
                "host|srflx|prflx|relay|typ|raddr|rport|generation|ufrag|network-cost|tcptype|active|passive",
                "[0-9a-f:.]{1,40}",
                "[a-z0-9-]{1,20}\\.local",
                ".{0,12}",
            ];
            (any::<bool>(), prop::collection::vec(token, 0..16))
                .prop_map(|(prefix, tokens)| format!("{}candidate:{}", if prefix { "a=" } else { "" }, tokens.join(" ")))
        }

        fn candidate_json() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::{Value, json};
            let text = |max: usize| {
                let ascii = proptest::string::string_regex(&format!("[a-zA-Z0-9+/]{{0,{max}}}")).unwrap();
                prop::option::of(prop_oneof![ascii, any::<String>()])
            };
            let index = prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::from),
                (0u64..70_000).prop_map(Value::from),
                ".{0,5}".prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
            ];
            let candidate = prop_oneof![candidate_line(), Just(String::new()), any::<String>(), "candidate:[ -~]{1000,1100}"];
            (candidate, text(40), index, text(300), prop::bool::weighted(0.9)).prop_map(|(c, mid, index, ufrag, candidate_is_text)| {
                let mut v = json!({"sdpMid": mid, "sdpMLineIndex": index});
                v["candidate"] = if candidate_is_text { json!(c) } else { json!(c.len()) };
                if let Some(u) = ufrag {
                    v["usernameFragment"] = json!(u);
                }
                v
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(384))]

            #[test]
            fn any_text_is_a_description_or_invalid_sdp(kind in "offer|answer|[ -~]{0,6}", sdp in any::<String>()) {
                sdp_outcome(desc(&kind, &sdp).validate(SdpKind::Offer));
                sdp_outcome(desc(&kind, &format!("{OFFER}{sdp}")).validate(SdpKind::Offer));
            }

            #[test]
            fn a_mutated_offer_is_valid_or_invalid_sdp(edits in prop::collection::vec(edit(), 1..8), crlf in any::<bool>()) {
                sdp_outcome(desc("offer", &mutate(&edits, crlf)).validate(SdpKind::Offer));
            }

            #[test]
            fn any_candidate_is_valid_or_refused_in_shape_or_content(v in candidate_json()) {
                let checked = crate::protocol::json::from_value::<IceCandidate>(v.clone()).and_then(|c| c.validate().map(|()| c));
                match checked {
                    Ok(c) => {
                        prop_assert!(c.candidate.len() <= MAX_CANDIDATE_BYTES);
                        prop_assert!(c.is_end_of_candidates() || c.sdp_mid.is_some() || c.sdp_m_line_index.is_some());
                    }
                    Err(e) => prop_assert!(matches!(e.code(), ErrorCode::BadRequest | ErrorCode::InvalidCandidate), "{v}: {e}"),
                }
            }
        }
    }
}
