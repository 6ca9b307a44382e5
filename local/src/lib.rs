//! The developer's command line (`wxim`) as a library, so the tests drive the same code: the
//! local HTTP server, the function router, event signing, the demo and the API stand-ins.

pub mod demo;
pub mod httpd;
pub mod routes;
pub mod sample;
pub mod sign;
pub mod standin;
pub mod storm;
pub mod stream;
pub mod wiring;
