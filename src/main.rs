//! The `s3crypt` binary; everything lives in the library (`s3crypt::cli`).

fn main() -> std::process::ExitCode {
    s3crypt::cli::main()
}
