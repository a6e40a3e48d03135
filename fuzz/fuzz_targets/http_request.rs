//! The HTTP request parser fed arbitrary bytes, as a connection would receive them: in
//! pieces (every prefix of a request must ask for more, never complete early or fail where
//! the whole succeeds), and pipelined (parsing continues after each complete request).
#![no_main]

use libfuzzer_sys::fuzz_target;
use video_server::http::request::{header_slots, parse, Limits, Parsed};

fuzz_target!(|data: &[u8]| {
    // Small limits, so that the fuzzer reaches them.
    let limits = Limits {
        max_head_bytes: 1_024,
        max_body_bytes: 4_096,
    };
    let peer = ([127, 0, 0, 1], 9).into();
    let mut rest = data;
    for _ in 0..64 {
        let mut slots = header_slots();
        let length = match parse(rest, &mut slots, peer, &limits) {
            Ok(Parsed::Complete { request, length }) => {
                assert!(length <= rest.len() && length > 0);
                assert!(request.body.len() <= limits.max_body_bytes);
                assert!(request.target.starts_with('/') || request.target == "*");
                let _ = request.path();
                length
            }
            Ok(Parsed::NeedBody { total, .. }) => {
                assert!(total > rest.len());
                return;
            }
            Ok(Parsed::NeedHead) => return,
            Err(error) => {
                assert!((400..600).contains(&error.status()));
                return;
            }
        };
        // The same request received in pieces: no prefix completes or fails.
        for cut in 0..length {
            let mut slots = header_slots();
            match parse(&rest[..cut], &mut slots, peer, &limits) {
                Ok(Parsed::NeedHead | Parsed::NeedBody { .. }) => {}
                Ok(Parsed::Complete { .. }) => panic!("complete after {cut} of {length} bytes"),
                Err(error) => panic!("a prefix of {cut} of {length} bytes failed: {error}"),
            }
        }
        rest = &rest[length..];
    }
});
