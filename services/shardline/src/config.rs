//! Configuration plumbing of the binary: the shared pieces from
//! [`shardline_core::config`] (flags > environment > TOML file > defaults,
//! validated; a bad value exits 2 naming the setting).

pub use shardline_core::config::{ConfigError, in_range, load_file, parse_duration, postgres_url};
