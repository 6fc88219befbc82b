use std::process::ExitCode;

fn main() -> ExitCode {
    shardline::main()
}
