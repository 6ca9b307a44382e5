//! The sample configuration of `events/sample.env`, compiled in so that `wxim demo` and the
//! tests work from any directory.

use common::config::{Config, ConfigError};

pub const SAMPLE_ENV: &str = include_str!("../../events/sample.env");

/// The `wx.login` codes the samples in events/bind/ carry, and the mini-program openids the
/// WeChat stand-in (`wxim standins`, the tests) exchanges them for, once each as WeChat does.
pub const LOGIN_CODES: [(&str, &str); 2] = [
    (
        "0c3Sample0LoginCode0CustomerLin1",
        "otFpruAK8D-E6EfStSYonYSBZ8_4",
    ),
    (
        "0c3Sample0LoginCode0NewPhone0002",
        "otFpruNEWPHONE-8D3kQ2mZ0Xy7wA",
    ),
];

pub fn vars() -> Vec<(String, String)> {
    dotenvy::from_read_iter(SAMPLE_ENV.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// The sample configuration with some variables replaced or added.
pub fn config(overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut v = vars();
    for (k, val) in overrides {
        v.retain(|(name, _)| name != k);
        v.push(((*k).to_owned(), (*val).to_owned()));
    }
    Config::from_lookup(&|k| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone()))
}
