//! The `--cdns` file: any bytes load or are refused with a message; never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use video_server::token::parse_cdns;

fuzz_target!(|data: &[u8]| {
    match parse_cdns(data, Path::new("/nonexistent"), "fuzz.json") {
        Ok(cdns) => assert!(!cdns.is_empty()),
        Err(error) => assert!(error.to_string().contains("fuzz.json")),
    }
});
